"""A throw-away NFS server on loopback, for tests: our portmapper plus nfs-ganesha.

There is no kernel NFS here; nfs-ganesha (VFS FSAL) exports a fresh
temporary directory as ``/export`` (NFSv3 and v4, TCP, no root squash) on
127.0.0.1, on free ports, registered with :mod:`portmapper` (ours), which
must own 127.0.0.1:111 and ``/run/rpcbind.sock``: ganesha registers through
that socket, and QEMU's NFS client asks port 111. It is up in about 0.5 s::

    with running_nfs_server() as server:
        ... server.host, server.export, server.export_dir ...

Both daemons are children of this process and die with it (even by
SIGKILL); they are killed by PID and the directory removed whatever
happened, including a failed start. A missing program raises
:class:`MissingProgram` with the packages to install.

Made per the team's NFS recipe. NOTE: ``Attr_Expiration_Time = 0`` and
``Dir_Chunk = 0`` let tests look at the export directory behind ganesha's
back without later NFS calls failing with NFS3ERR_STALE.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

PORTMAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "portmapper.py")
RPCBIND_SOCKET = "/run/rpcbind.sock"
NFS_PROG, MOUNT_PROG = 100003, 100005
START_TIMEOUT = 20.0
INSTALL_HINT = (
    "apt-get install --no-install-recommends nfs-ganesha nfs-ganesha-vfs qemu-block-extra "
    "libnfs13 (tools/install-deps.sh)"
)
REQUIRED = {
    "ganesha.nfsd": lambda: shutil.which("ganesha.nfsd"),
    "nfs-ganesha-vfs (libfsalvfs.so)": lambda: _first_existing(
        "/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so", "/usr/lib/ganesha/libfsalvfs.so"
    ),
    "QEMU's NFS driver (block-nfs.so)": lambda: _first_existing(
        "/usr/lib/x86_64-linux-gnu/qemu/block-nfs.so"
    ),
}

CONFIG = """\
NFS_CORE_PARAM {{
    Bind_Addr = 127.0.0.1; NFS_Port = {nfs_port}; MNT_Port = {mnt_port};
    Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false;
    mount_path_pseudo = true; Protocols = 3, 4;
}}
NFSV4 {{ Graceless = true; RecoveryRoot = "{d}/recov"; }}
EXPORT {{
    Export_Id = 1; Path = "{d}/export"; Pseudo = "/export"; Access_Type = RW;
    Squash = No_Root_Squash; Protocols = 3, 4; Transports = TCP; SecType = sys;
    Attr_Expiration_Time = 0; FSAL {{ Name = VFS; }}
}}
MDCACHE {{ Dir_Chunk = 0; }}
LOG {{ Default_Log_Level = EVENT; }}
"""


class MissingProgram(RuntimeError):
    """A program or package the NFS server needs is not installed."""


@dataclass
class NfsServer:
    host: str
    #: The export's path for clients (``nfs://host/export``).
    export: str
    #: The exported directory on this host (look, but change things through NFS).
    export_dir: str
    dir: str
    nfs_port: int
    start_seconds: float = 0.0
    pids: dict[str, int] = field(default_factory=dict)

    def url(self, path: str = "") -> str:
        return "nfs://%s%s/%s" % (self.host, self.export, path.lstrip("/"))


def _first_existing(*paths: str) -> str | None:
    return next((p for p in paths if os.path.exists(p)), None)


def check_programs() -> None:
    """:raises MissingProgram: with what to install."""
    missing = [name for name, found in REQUIRED.items() if not found()]
    if missing:
        raise MissingProgram("%s not installed: %s" % (", ".join(missing), INSTALL_HINT))


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def getport(prog: int, vers: int, host: str = "127.0.0.1", timeout: float = 2) -> int:
    """Ask the portmapper at ``host``:111 (portmap v2 GETPORT, TCP) for ``prog``."""
    call = struct.pack(">IIIIII", 1, 0, 2, 100000, 2, 3) + bytes(16)  # AUTH_NONE cred+verf
    call += struct.pack(">IIII", prog, vers, 6, 0)
    with socket.create_connection((host, 111), timeout=timeout) as s:
        s.sendall(struct.pack(">I", 0x80000000 | len(call)) + call)
        data = b""
        while len(data) < 4 + 28:
            chunk = s.recv(64)
            if not chunk:
                return 0
            data += chunk
    return int(struct.unpack(">I", data[-4:])[0])


def _die_with_parent() -> None:
    """In the child: SIGKILL when the fixture process dies, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(d: str, name: str, args: list[str]) -> subprocess.Popen:
    out = open(os.path.join(d, name + ".out"), "wb")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        out.close()


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(line for line in f.readlines() if "CRIT" not in line)[-3000:]
    except OSError:
        return "(no %s)" % path


def _wait(what: str, check, procs: dict[str, subprocess.Popen], d: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    "%s exited with %s while waiting for %s:\n%s\n%s"
                    % (
                        name,
                        proc.returncode,
                        what,
                        _tail(os.path.join(d, name + ".out")),
                        _tail(os.path.join(d, "ganesha.log")),
                    )
                )
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (START_TIMEOUT, what))
        time.sleep(0.05)


def _start(d: str, procs: dict[str, subprocess.Popen]) -> NfsServer:
    if _listening("127.0.0.1", 111) or os.path.exists(RPCBIND_SOCKET):
        raise RuntimeError(
            "a portmapper already serves 127.0.0.1:111 or %s (another NFS test run, or "
            "rpcbind?); QEMU's NFS client only asks port 111, so stop it first" % RPCBIND_SOCKET
        )
    export_dir = os.path.join(d, "export")
    os.makedirs(export_dir, mode=0o755)
    os.chmod(export_dir, 0o755)
    os.makedirs(os.path.join(d, "recov"))
    nfs_port, mnt_port = _free_ports(2)
    conf = os.path.join(d, "ganesha.conf")
    with open(conf, "w") as f:
        f.write(CONFIG.format(d=d, nfs_port=nfs_port, mnt_port=mnt_port))
    procs["portmapper"] = _spawn(
        d,
        "portmapper",
        [sys.executable, PORTMAPPER, "--host", "127.0.0.1", "--unix", RPCBIND_SOCKET],
    )
    _wait("the portmapper", lambda: _listening("127.0.0.1", 111), procs, d)
    procs["ganesha"] = _spawn(
        d,
        "ganesha",
        [
            "ganesha.nfsd",
            "-F",
            "-f",
            conf,
            "-L",
            os.path.join(d, "ganesha.log"),
            "-p",
            os.path.join(d, "ganesha.pid"),
            "-N",
            "NIV_EVENT",
        ],
    )

    def registered() -> bool:
        return (
            getport(NFS_PROG, 3) == nfs_port
            and getport(MOUNT_PROG, 3) == mnt_port
            and _listening("127.0.0.1", nfs_port)
        )

    _wait("ganesha to register NFSv3 and MOUNTv3", registered, procs, d)
    return NfsServer(
        host="127.0.0.1",
        export="/export",
        export_dir=export_dir,
        dir=d,
        nfs_port=nfs_port,
        pids={name: p.pid for name, p in procs.items()},
    )


def _stop(d: str, procs: dict[str, subprocess.Popen]) -> None:
    # NOTE: ganesha gets SIGKILL, not a graceful stop (about 1.7 s): all of it
    # is thrown away. The portmapper gets SIGTERM, so it removes its socket.
    ganesha = procs.get("ganesha")
    if ganesha is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ganesha.pid, signal.SIGCONT)  # a test may have frozen it
        ganesha.kill()
    portmapper = procs.get("portmapper")
    if portmapper is not None and portmapper.poll() is None:
        portmapper.terminate()
    for proc in procs.values():
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if portmapper is not None and os.path.exists(RPCBIND_SOCKET):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(RPCBIND_SOCKET)
    shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def running_nfs_server(parent_dir: str | None = None) -> Iterator[NfsServer]:
    """Start the portmapper and ganesha; yield the server's facts; always clean up.

    :raises MissingProgram: ganesha, its VFS FSAL or QEMU's NFS driver is missing.
    :raises RuntimeError: it did not come up (with the daemon's output and log).
    """
    check_programs()
    d = tempfile.mkdtemp(prefix="cd-nfs-", dir=parent_dir)
    procs: dict[str, subprocess.Popen] = {}
    try:
        started = time.monotonic()
        server = _start(d, procs)
        server.start_seconds = time.monotonic() - started
        yield server
    finally:
        _stop(d, procs)


if __name__ == "__main__":
    with running_nfs_server() as s:
        print("up in %.2f s: %s (%s)" % (s.start_seconds, s.url(), s.export_dir))
