"""A throw-away iSCSI target (tgtd) on loopback, for tests.

One target with file-backed LUNs (sparse files), an initiator ACL and a
CHAP account, per the team's NFS/iSCSI recipe; it comes up in well under a
second::

    with running_target() as t:
        ... t.portal, t.iqn, t.initiator, t.username, t.password, t.luns ...

tgtd runs in the foreground as a child of this process, on a free portal
port and with a private management socket (``TGT_IPC_SOCKET`` in its own
directory), so it never meets the system's tgtd or another test run's.

NOTE: tgtd ignores SIGTERM (tgt 1.0.85 here, even with no target left):
the target is deleted with ``--force``, then ``tgtadm --op delete --mode
system`` makes tgtd exit; SIGKILL if it lingers. Its directory is removed
whatever happened, a failed start included.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

PROGRAMS = ("tgtd", "tgtadm")
INSTALL_HINT = "apt-get install tgt libiscsi7 (tools/install-deps.sh)"
IQN = "iqn.2026-01.org.computedriver.test:target1"
INITIATOR = "iqn.2026-01.org.computedriver.test:host1"
USERNAME = "cdtestuser"
#: LUN number -> size in bytes: LUN 1 is the claim LUN, the others the pool.
DEFAULT_LUNS = {1: 1024**2, 2: 1024**3, 3: 1024**3, 4: 2 * 1024**3}
START_TIMEOUT = 10.0


@dataclass
class IscsiTarget:
    """Facts of a running throw-away target (the password is for the fixture's own use)."""

    dir: str
    port: int
    control_port: int
    iqn: str
    initiator: str
    username: str
    password: str = field(repr=False)
    #: LUN number -> backing file.
    luns: dict[int, str]
    pid: int

    @property
    def portal(self) -> str:
        return "127.0.0.1:%d" % self.port

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, TGT_IPC_SOCKET=os.path.join(self.dir, "ipc", "socket"))

    def tgtadm(self, *args: str) -> str:
        return _tgtadm(self.env, self.control_port, *args)

    def connections(self) -> str:
        """``tgtadm --op show --mode conn``: one paragraph per session."""
        return self.tgtadm("--op", "show", "--mode", "conn", "--tid", "1")


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tgtadm(env: dict[str, str], control_port: int, *args: str) -> str:
    done = subprocess.run(
        ["tgtadm", "-C", str(control_port), "--lld", "iscsi", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise RuntimeError("tgtadm %s failed: %s" % (" ".join(args[:4]), done.stderr.strip()))
    return done.stdout


def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-20:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running_target(
    luns: dict[int, int] | None = None, password: str | None = None
) -> Iterator[IscsiTarget]:
    """Start tgtd with one target (ACL: :data:`INITIATOR`; CHAP: :data:`USERNAME`); tear it down.

    :param luns: LUN number -> size in bytes (default :data:`DEFAULT_LUNS`).
    :raises RuntimeError: tgtd did not come up (with its log).
    """
    d = tempfile.mkdtemp(prefix="cd-tgt-")
    os.makedirs(os.path.join(d, "ipc"))
    # NOTE: the socket lives in our own directory, so any accepted number will do.
    port, control_port = _free_port(), 1 + os.getpid() % 30000
    env = dict(os.environ, TGT_IPC_SOCKET=os.path.join(d, "ipc", "socket"))
    log = os.path.join(d, "tgtd.log")
    proc: subprocess.Popen | None = None
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    "tgtd",
                    "-f",
                    "-C",
                    str(control_port),
                    "--iscsi",
                    "portal=127.0.0.1:%d" % port,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError("tgtd exited with %s:\n%s" % (proc.returncode, _tail(log)))
            try:
                _tgtadm(env, control_port, "--op", "show", "--mode", "sys")
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except (RuntimeError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError("tgtd did not come up:\n%s" % _tail(log)) from None
                time.sleep(0.02)
        target = IscsiTarget(
            dir=d,
            port=port,
            control_port=control_port,
            iqn=IQN,
            initiator=INITIATOR,
            username=USERNAME,
            password=password or "pw-" + os.urandom(8).hex(),
            luns={},
            pid=proc.pid,
        )
        target.tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T", IQN)
        for number, size in sorted((luns or DEFAULT_LUNS).items()):
            path = os.path.join(d, "lun%d.img" % number)
            with open(path, "wb") as f:
                f.truncate(size)
            target.tgtadm(
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                str(number),
                "-b",
                path,
            )
            target.luns[number] = path
        target.tgtadm(
            "--op", "bind", "--mode", "target", "--tid", "1", "--initiator-name", INITIATOR
        )
        # NOTE: the fixture's own tgtadm carries the password on its command
        # line; tests look for it only in what the backend does.
        target.tgtadm(
            "--op", "new", "--mode", "account", "--user", USERNAME, "--password", target.password
        )
        target.tgtadm("--op", "bind", "--mode", "account", "--tid", "1", "--user", USERNAME)
        yield target
    finally:
        if proc is not None:
            for stop in (
                ("--op", "delete", "--mode", "target", "--tid", "1", "--force"),
                ("--op", "delete", "--mode", "system"),  # what makes tgtd exit
            ):
                if proc.poll() is None:
                    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                        _tgtadm(env, control_port, *stop)
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    started = time.monotonic()
    with running_target() as t:
        print("up in %.2f s at %s" % (time.monotonic() - started, t.portal))
