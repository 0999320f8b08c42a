"""Running ``qemu-img``: the one runner the storage backends, the libvirt
driver and the image store use.

NOTE: there is no Python binding for image conversion and backing-file
creation; every argument is a list item, never a shell string.

Each caller keeps its own typed error: it passes ``error``, a function of
(operation, reason) that builds it (:class:`StorageError` naming the file
by default). ``qemu-img info`` and ``check`` parse image metadata that a
tenant may have written (an imported image, a guest's disk chain), the class
of CVE-2015-5162: they always run under ``prlimit`` (1 GiB of address space,
30 s of CPU, as Nova's ``oslo_concurrency.prlimit`` does).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

from compute_driver import exception

#: Seconds one qemu-img run may take (a conversion copies a whole image).
TIMEOUT = 3600
#: Limits of one ``qemu-img info`` or ``check`` run (Nova's QEMU_IMG_LIMITS).
PROBE_ADDRESS_SPACE = 1024**3
PROBE_CPU_SECONDS = 30
#: Subcommands that only read metadata: always resource-limited.
LIMITED = ("info", "check")

#: Builds the caller's typed error from (operation, reason).
Error = Callable[[str, str], Exception]


def limited(args: Sequence[str]) -> list[str]:
    """``args`` run under ``prlimit`` with the probe's limits."""
    # NOTE: util-linux prlimit rather than preexec_fn: preexec_fn is unsafe
    # in a threaded process (the RPC servers are), and this is what Nova's
    # oslo_concurrency.prlimit does in Python.
    return [
        "prlimit",
        "--as=%d" % PROBE_ADDRESS_SPACE,
        "--cpu=%d" % PROBE_CPU_SECONDS,
        "--",
        *args,
    ]


def storage_error(args: Sequence[str]) -> Error:
    """The default error: a :class:`StorageError` naming the last argument (the file)."""

    def error(operation: str, reason: str) -> Exception:
        return exception.StorageError(operation=operation, volume=args[-1], reason=reason)

    return error


def execute(
    args: Sequence[str], error: Error, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``qemu-img ARGS`` whatever its exit status (``info``/``check`` under prlimit).

    :raises: ``error``: qemu-img (or prlimit) is not installed, or too slow.
    """
    command = ["qemu-img", *args]
    if args[0] in LIMITED:
        command = limited(command)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise error("qemu-img", "%s is not installed" % exc.filename) from exc
    except subprocess.TimeoutExpired as exc:
        raise error("qemu-img " + args[0], "took more than %d s" % timeout) from exc


def failure(done: subprocess.CompletedProcess[str]) -> str:
    """Why a run failed, in one line of at most 300 characters."""
    if done.returncode < 0:
        if done.args[0] == "prlimit":
            return "qemu-img exceeded its limits (signal %d)" % -done.returncode
        return "qemu-img was killed (signal %d)" % -done.returncode
    text = " ".join(line.strip() for line in done.stderr.strip().splitlines())
    return (text or "qemu-img failed (%d)" % done.returncode)[:300]


def run(*args: str, timeout: float = TIMEOUT, error: Error | None = None) -> str:
    """``qemu-img ARGS``; its standard output.

    :param error: builds the caller's error from (operation, reason); by
        default a :class:`StorageError` naming the last argument.
    :raises: that error: not installed, failed (with its message), or too slow.
    """
    fail = error or storage_error(args)
    done = execute(args, fail, timeout)
    if done.returncode != 0:
        raise fail("qemu-img " + args[0], failure(done))
    return done.stdout
