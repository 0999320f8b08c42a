"""Running ``qemu-img``: the one subprocess the storage backends use.

NOTE: there is no Python binding for image conversion and backing-file
creation; every argument is a list item, never a shell string.
"""

from __future__ import annotations

import subprocess

from compute_driver import exception

#: Seconds one qemu-img run may take (a conversion copies a whole image).
TIMEOUT = 3600


def run(*args: str, timeout: float = TIMEOUT) -> str:
    """``qemu-img ARGS``; its standard output.

    :raises StorageError: not installed, failed (with its message), or too slow;
        the last argument names the file in the error.
    """
    try:
        done = subprocess.run(
            ["qemu-img", *args], check=True, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise exception.StorageError(
            operation="qemu-img", volume=args[-1], reason="qemu-img is not installed"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise exception.StorageError(
            operation="qemu-img " + args[0], volume=args[-1], reason=exc.stderr.strip()[:300]
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise exception.StorageError(
            operation="qemu-img " + args[0],
            volume=args[-1],
            reason="took more than %d s" % timeout,
        ) from exc
    return done.stdout
