"""A throw-away single-node Ceph cluster on loopback, for tests and benches.

One monitor and one memstore OSD, both bound to 127.0.0.1, in a fresh
temporary directory, on free ports; nothing is written to ``/etc/ceph`` or
``/var/lib/ceph``. It comes up in about 0.6 s (2-core VM)::

    with running_ceph() as ceph:
        ... ceph.client_conf, ceph.client_keyring, ceph.client_id ...

The daemons run in the foreground as children of this process (``-f``) and
are killed by PID, then by the PIDs in their pid files, and the directory is
removed, whatever happened, including a failed start.

Made per the team's Ceph RBD recipe (Debian 12, Ceph 16 "Pacific"), faster:
keys are made here rather than by ceph-authtool, and the cluster is driven
through the rados binding rather than the ``ceph`` CLI. There is no
ceph-mgr: RBD works without one, but the cluster then reports zero capacity
(``ceph df``); ``CephCluster.has_mgr`` says so.

NOTE: the module is not called ``ceph.py``: pytest puts this directory on
``sys.path``, where that name would shadow Debian's own ``ceph`` package.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import rados

#: Pools made in every cluster; the test client may use only the first.
POOLS = ("rbd", "other")
#: The cephx id (``client.<id>``) limited to pool ``rbd``.
CLIENT_ID = "cdtest"
START_TIMEOUT = 60.0

CONF = """\
[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {d}/keyring
run dir = {d}/run
crash dir = {d}/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon warn on insecure global id reclaim allowed = false
mon mgr mkfs grace = 31536000
paxos propose interval = 0.01

[mon]
mon data = {d}/mon/$id
mon cluster log file = {d}/log/cluster.log
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log

[osd]
osd data = {d}/osd/$id
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd op num shards = 1
osd op num threads per shard = 2
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
"""

#: What a client (the backend under test) reads: monitors only, no keyring,
#: so that it can only use the key it is given.
CLIENT_CONF = """\
[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
"""


@dataclass
class CephCluster:
    """Connection facts of a running throw-away cluster."""

    dir: str
    fsid: str
    mon_host: str
    #: The monitor's msgr2 and legacy (v1) ports.
    mon_port_v2: int
    mon_port_v1: int
    #: ceph.conf with the admin keyring: for the fixture and for checks.
    admin_conf: str
    #: ceph.conf with monitors only, for clients that bring their own keyring.
    client_conf: str
    client_id: str
    client_keyring: str
    pools: tuple[str, ...] = POOLS
    #: False: no ceph-mgr runs, so the cluster reports zero capacity.
    has_mgr: bool = False
    start_seconds: float = 0.0
    #: PID of each daemon by name ("mon.a", "osd.0"): to freeze one in a test.
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def client_key(self) -> str:
        """The base64 cephx key of ``client_id`` (for a libvirt secret; never log it)."""
        return _read_key(self.client_keyring)

    def admin(self) -> rados.Rados:
        """A connected admin client; the caller shuts it down."""
        return _connect(self.admin_conf, "client.admin")


def _free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out as free (kept open until all are picked)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _new_key() -> str:
    """A cephx secret as ceph-authtool --gen-key makes it.

    Encoding of ``CryptoKey``: le16 type (1 = AES), le32 seconds, le32
    nanoseconds, le16 length, the 16 key bytes.
    """
    secret = os.urandom(16)
    return base64.b64encode(struct.pack("<HIIH", 1, int(time.time()), 0, 16) + secret).decode()


def _keyring_entry(name: str, caps: dict[str, str]) -> str:
    lines = ["[%s]" % name, "\tkey = %s" % _new_key()]
    lines += ['\tcaps %s = "%s"' % (svc, cap) for svc, cap in caps.items()]
    return "\n".join(lines) + "\n"


def _read_key(keyring: str) -> str:
    with open(keyring) as f:
        for line in f:
            name, _, value = line.partition("=")
            if name.strip() == "key":
                return value.strip()
    raise ValueError("no key in %s" % keyring)


def _connect(conffile: str, name: str, timeout: int = 10) -> rados.Rados:
    cluster = rados.Rados(
        conffile=conffile,
        name=name,
        conf={
            "client_mount_timeout": str(timeout),
            "rados_mon_op_timeout": str(timeout),
            "rados_osd_op_timeout": str(timeout),
        },
    )
    try:
        cluster.connect(timeout=timeout)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def _mon_command(cluster: rados.Rados, **cmd: object) -> bytes:
    ret, out, err = cluster.mon_command(json.dumps(cmd), b"", timeout=10)
    if ret != 0:
        raise RuntimeError("ceph %s failed (%d): %s" % (cmd["prefix"], ret, err))
    return out


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(
            "%s failed (%d): %s" % (" ".join(args), done.returncode, done.stderr.strip()[-2000:])
        )


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no %s)" % path


def _wait(what: str, check, procs: dict[str, subprocess.Popen], d: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    "ceph-%s exited with %s while waiting for %s; its log:\n%s"
                    % (name, proc.returncode, what, _tail(os.path.join(d, "log", name + ".log")))
                )
        if check():
            return
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.05)


def _start(d: str, procs: dict[str, subprocess.Popen], memstore_bytes: int) -> CephCluster:
    for sub in ("run", "log", "mon", "osd/0", "crash"):
        os.makedirs(os.path.join(d, sub))
    fsid, osd_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    v2, v1 = _free_ports(2)
    conf = os.path.join(d, "ceph.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(fsid=fsid, v2=v2, v1=v1, d=d, memstore_bytes=memstore_bytes))
    client_conf = os.path.join(d, "client.conf")
    with open(client_conf, "w") as f:
        f.write(CLIENT_CONF.format(fsid=fsid, v2=v2, v1=v1))
    # NOTE: every key goes in before mon --mkfs, which imports them all, so
    # neither `ceph auth add` nor `ceph-osd --mkkey` is needed.
    keyring = os.path.join(d, "keyring")
    fd = os.open(keyring, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_keyring_entry("mon.", {"mon": "allow *"}))
        f.write(
            _keyring_entry(
                "client.admin",
                {"mon": "allow *", "osd": "allow *", "mgr": "allow *", "mds": "allow *"},
            )
        )
        f.write(
            _keyring_entry(
                "osd.0",
                {"mon": "allow profile osd", "osd": "allow *", "mgr": "allow profile osd"},
            )
        )
    monmap = os.path.join(d, "monmap")
    _run(
        [
            "monmaptool",
            "--create",
            "--fsid",
            fsid,
            "--addv",
            "a",
            "[v2:127.0.0.1:%d,v1:127.0.0.1:%d]" % (v2, v1),
            monmap,
        ]
    )
    _run(["ceph-mon", "-c", conf, "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", keyring])
    procs["mon.a"] = _daemon(d, "mon.a", ["ceph-mon", "-f", "-c", conf, "-i", "a"])

    admin = _connect(conf, "client.admin", timeout=int(START_TIMEOUT))
    try:
        _mon_command(admin, prefix="osd new", uuid=osd_uuid, id=0)
        _run(["ceph-osd", "-c", conf, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid])
        procs["osd.0"] = _daemon(d, "osd.0", ["ceph-osd", "-f", "-c", conf, "-i", "0"])

        def osd_up() -> bool:
            dump = json.loads(_mon_command(admin, prefix="osd dump", format="json"))
            return any(o["osd"] == 0 and o["up"] for o in dump["osds"])

        _wait("osd.0 up", osd_up, procs, d, START_TIMEOUT)
        for pool in POOLS:
            _mon_command(admin, prefix="osd pool create", pool=pool, pg_num=8, pgp_num=8)
            _mon_command(admin, prefix="osd pool application enable", pool=pool, app="rbd")
        for pool in POOLS:
            # A write returns once the pool's placement groups are active.
            with admin.open_ioctx(pool) as ioctx:
                ioctx.write_full("_ready", b"")
                ioctx.remove_object("_ready")
        client_keyring = os.path.join(d, "client.%s.keyring" % CLIENT_ID)
        out = _mon_command(
            admin,
            prefix="auth get-or-create",
            entity="client." + CLIENT_ID,
            caps=[
                "mon",
                "profile rbd",
                "osd",
                "profile rbd pool=rbd",
                "mgr",
                "profile rbd pool=rbd",
            ],
        )
        fd = os.open(client_keyring, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as kf:
            kf.write(out)
    finally:
        admin.shutdown()
    return CephCluster(
        dir=d,
        fsid=fsid,
        mon_host="127.0.0.1",
        mon_port_v2=v2,
        mon_port_v1=v1,
        admin_conf=conf,
        client_conf=client_conf,
        client_id=CLIENT_ID,
        client_keyring=client_keyring,
        pids={name: p.pid for name, p in procs.items()},
    )


def _die_with_parent() -> None:
    """In the child: SIGKILL when the fixture process dies, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _daemon(d: str, name: str, args: list[str]) -> subprocess.Popen:
    out = open(os.path.join(d, "log", name + ".out"), "wb")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # NOTE: own session so a terminal's ^C reaches only pytest, whose
            # teardown then kills the daemons; the death signal covers a kill -9.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        out.close()


def _pidfile_pids(d: str) -> list[int]:
    pids = []
    run = os.path.join(d, "run")
    for name in os.listdir(run) if os.path.isdir(run) else ():
        if name.endswith(".pid"):
            try:
                with open(os.path.join(run, name)) as f:
                    pids.append(int(f.read().strip()))
            except (OSError, ValueError):
                pass
    return pids


def _ours(pid: int, d: str) -> bool:
    """True if ``pid`` is a ceph daemon of this cluster (pids get reused)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return os.fsencode(d) in f.read()
    except OSError:
        return False


def _stop(d: str, procs: dict[str, subprocess.Popen]) -> None:
    # NOTE: SIGKILL, not a graceful stop: everything here is thrown away,
    # and a graceful mon/osd stop takes 2 s each.
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
    for proc in procs.values():
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    for pid in _pidfile_pids(d):
        if _ours(pid, d):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _ours(pid, d) and time.monotonic() < deadline:
                time.sleep(0.05)
    shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def running_ceph(
    parent_dir: str | None = None, memstore_bytes: int = 2 * 1024**3
) -> Iterator[CephCluster]:
    """Start a one-mon, one-OSD cluster; yield its facts; always tear it down.

    :param parent_dir: where the cluster's temporary directory goes (default
        ``$TMPDIR``); keep it short, admin socket paths are limited to 107 bytes.
    :param memstore_bytes: the OSD's capacity, held in RAM as it fills.
    :raises RuntimeError: the cluster did not come up (with the daemon's log).
    """
    d = tempfile.mkdtemp(prefix="cd-ceph-", dir=parent_dir)
    procs: dict[str, subprocess.Popen] = {}
    try:
        started = time.monotonic()
        cluster = _start(d, procs, memstore_bytes)
        cluster.start_seconds = time.monotonic() - started
        yield cluster
    finally:
        _stop(d, procs)


if __name__ == "__main__":
    with running_ceph() as c:
        print(json.dumps({"start_seconds": round(c.start_seconds, 2), "dir": c.dir}))
