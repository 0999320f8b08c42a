"""64 MiB sequential write into a volume of each backend, against a local file.

What is measured: ``qemu-io`` (the QEMU block layer a guest's disk goes
through) writing 64 MiB sequentially in 1 MiB requests, one at a time
(``write -P 0x5a <offset> 1M`` x 64, like ``dd bs=1M oflag=direct`` in a
guest), then ``flush``, into a fresh 1 GiB volume made by the backend itself
(``create_volume``). The volume is opened exactly as the guest's disk would
be: the block driver, format, cache mode, hosts, user, initiator IQN and
secret come from the backend's own ``disk_config()`` (the libvirt ``<disk>``
the agent attaches), turned into ``qemu-io --image-opts`` options; the CHAP
password and the cephx key are ``--object secret`` objects, as libvirt gives
them to QEMU (libvirt passes them inline, encrypted with its master key; here
they are 0600 files). So the figures include the format (dir and
nfs: qcow2 cluster allocation on a new volume), the cache mode (dir, nfs,
iscsi: ``none``; rbd: ``writeback``, librbd's cache, then flushed) and the
transport (libnfs, libiscsi, librbd over loopback); they do not include a
guest's virtio and TCG overhead.

Each write run is timed as a whole process (open, writes, flush, close),
less the median time of the same process with no writes (open, flush, close:
the logins and mounts): what is left is the write and the flush.

Baseline, in the same run and interleaved round by round: the same qemu-io
run on a fresh sparse raw file of 1 GiB in a local directory (``$TMPDIR``),
with cache ``none`` (O_DIRECT, as the dir backend's disks). A ratio is a
backend's median time over the baseline's median time (2.0: half as fast).

The servers are the throw-away ones of the functional tests, all on
loopback on this host: a one-mon one-OSD memstore Ceph (RAM-backed, no
replication), nfs-ganesha (VFS on the local disk), tgtd (sparse files on the
local disk). Network figures are therefore a floor, not what a real
storage network gives.

Run as root (the daemons, libvirt for the CHAP secret, qemu-io)::

    .venv/bin/python bench/volume_io.py [--rounds N] [--smoke]

The last line is one JSON object: ``dir_ratio``, ``nfs_ratio``,
``iscsi_ratio``, ``rbd_ratio``, then ``local_ms`` and ``<backend>_ms``
(medians in ms), ``nfs_server_start_s`` and ``rbd_server_start_s`` (seconds
the throw-away nfs-ganesha and Ceph took to come up) and ``rounds``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import libvirt  # noqa: E402
from oslo_config import cfg  # noqa: E402

from storage_backends import base as storage_base  # noqa: E402
from storage_backends import dir as dir_backend  # noqa: E402
from storage_backends import iscsi as iscsi_backend  # noqa: E402
from storage_backends import nfs as nfs_backend  # noqa: E402
from storage_backends import rbd as rbd_backend  # noqa: E402
from tests.functional.storage.ceph_cluster import running_ceph  # noqa: E402
from tests.functional.storage.iscsi_target import running_target  # noqa: E402
from tests.functional.storage.nfs_server import running_nfs_server  # noqa: E402

GiB = 1024**3
MiB = 1024**2
WRITE_MIB = 64
BACKENDS = ("dir", "nfs", "iscsi", "rbd")
LIBVIRT_URI = "qemu:///system"
#: libvirt's cache attribute -> qemu-io -t; libvirt's default for QEMU is writeback.
CACHE = {None: "writeback", "default": "writeback"}


def _conf(state: str, group: cfg.OptGroup, opts: list, **options: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.StrOpt("state_path", default=state))
    conf.register_group(cfg.OptGroup(group.name))
    conf.register_opts(opts, group=group.name)
    conf([], project="compute-driver", default_config_files=[])
    for name, value in options.items():
        conf.set_override(name, value, group=group.name)
    return conf


def _private_file(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class Target:
    """How to open one volume with qemu-io: ``--image-opts`` and ``--object`` arguments."""

    def __init__(self, opts: str, cache: str, objects: list[str] | None = None) -> None:
        self.opts = opts
        self.cache = cache
        self.objects = objects or []

    def args(self) -> list[str]:
        args = ["qemu-io", "-t", self.cache]
        for obj in self.objects:
            args += ["--object", obj]
        return [*args, "--image-opts", self.opts]


def qemu_io_target(disk: Any, secrets: dict[str, str]) -> Target:
    """The qemu-io view of a libvirt disk builder, as libvirt would give it to QEMU.

    :param secrets: secret type (``ceph``, ``iscsi``) -> path of a file with its value
        (base64 for ceph, as libvirt passes it).
    """
    cache = CACHE.get(disk.cache, disk.cache)
    fmt = "driver=%s" % disk.driver_type
    if disk.type == "file":
        return Target("%s,file.driver=file,file.filename=%s" % (fmt, disk.source_file), cache)
    objects: list[str] = []
    proto = disk.source_protocol
    hosts = disk.hosts
    if proto == "nfs":
        opts = [
            fmt,
            "file.driver=nfs",
            "file.server.type=inet",
            "file.server.host=%s" % hosts[0].name,
            "file.path=%s" % disk.source_name,
            "file.user=0",
            "file.group=0",
        ]
    elif proto == "iscsi":
        target, _, lun = disk.source_name.rpartition("/")
        opts = [
            fmt,
            "file.driver=iscsi",
            "file.transport=tcp",
            "file.portal=%s:%d" % (hosts[0].name, hosts[0].port or 3260),
            "file.target=%s" % target,
            "file.lun=%s" % lun,
            "file.initiator-name=%s" % disk.source_initiator_iqn,
        ]
        if disk.auth_username:
            objects.append("secret,id=chap,file=%s,format=raw" % secrets["iscsi"])
            opts += ["file.user=%s" % disk.auth_username, "file.password-secret=chap"]
    elif proto == "rbd":
        pool, _, image = disk.source_name.partition("/")
        opts = [fmt, "file.driver=rbd", "file.pool=%s" % pool, "file.image=%s" % image]
        for n, host in enumerate(hosts):
            opts += [
                "file.server.%d.host=%s" % (n, host.name),
                "file.server.%d.port=%d" % (n, host.port or 6789),
            ]
        objects.append("secret,id=cephx,file=%s,format=base64" % secrets["ceph"])
        opts += ["file.user=%s" % disk.auth_username, "file.key-secret=cephx"]
    else:
        raise ValueError("no qemu-io mapping for protocol %r" % proto)
    return Target(",".join(opts), cache, objects)


def run_qemu_io(target: Target, write: bool) -> float:
    """Seconds one qemu-io run takes: open, (64 x 1 MiB writes,) flush, close."""
    commands: list[str] = []
    if write:
        for n in range(WRITE_MIB):
            commands += ["-c", "write -q -P 0x5a %d 1M" % (n * MiB)]
    commands += ["-c", "flush"]
    started = time.perf_counter()
    done = subprocess.run(
        target.args() + commands, capture_output=True, text=True, timeout=600, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or "failed" in done.stdout or "error" in done.stderr.lower():
        raise RuntimeError(
            "qemu-io failed (%d): %s%s" % (done.returncode, done.stdout, done.stderr)
        )
    return elapsed


@contextlib.contextmanager
def chap_secret(secret_uuid: str) -> Iterator[None]:
    """Remove the libvirt secret the iscsi backend defines from its password file."""
    try:
        yield
    finally:
        conn = libvirt.open(LIBVIRT_URI)
        try:
            with contextlib.suppress(libvirt.libvirtError):
                conn.secretLookupByUUIDString(secret_uuid).undefine()
        finally:
            conn.close()


@contextlib.contextmanager
def backends(
    work: str, start_s: dict[str, float]
) -> Iterator[dict[str, tuple[Any, dict[str, str]]]]:
    """Each backend on its throw-away server, with the secret files qemu-io needs.

    :param start_s: filled with the seconds each server took to come up (nfs, rbd).
    """
    with contextlib.ExitStack() as stack:
        found: dict[str, tuple[Any, dict[str, str]]] = {}
        volumes = os.path.join(work, "dir-volumes")
        found["dir"] = (
            dir_backend.DirStorageBackend(
                _conf(
                    work,
                    dir_backend.GROUP,
                    dir_backend.OPTS,
                    path=volumes,
                    image_cache_path=os.path.join(work, "image-cache"),
                )
            ),
            {},
        )
        nfs = stack.enter_context(running_nfs_server())
        start_s["nfs"] = nfs.start_seconds
        found["nfs"] = (
            nfs_backend.NfsStorageBackend(
                _conf(
                    work,
                    nfs_backend.GROUP,
                    nfs_backend.OPTS,
                    access_mode="direct",
                    server=nfs.host,
                    export=nfs.export,
                )
            ),
            {},
        )
        target = stack.enter_context(running_target(luns={1: MiB, 2: GiB}))
        secret_uuid = str(uuid.uuid4())
        stack.enter_context(chap_secret(secret_uuid))
        password_file = _private_file(work, "chap", target.password)
        # NOTE: lent a libvirt connection (for the CHAP secret), as the agent lends its own.
        conn = libvirt.open(LIBVIRT_URI)
        stack.callback(conn.close)
        found["iscsi"] = (
            iscsi_backend.IscsiStorageBackend(
                _conf(
                    work,
                    iscsi_backend.GROUP,
                    iscsi_backend.OPTS,
                    portal=target.portal,
                    targets=[target.iqn],
                    initiator_iqn=target.initiator,
                    claim_lun=1,
                    chap_username=target.username,
                    chap_secret_uuid=secret_uuid,
                    chap_password_file=password_file,
                ),
                services=storage_base.Services(hypervisor=lambda: conn),
            ),
            {"iscsi": password_file},
        )
        ceph = stack.enter_context(running_ceph())
        start_s["rbd"] = ceph.start_seconds
        found["rbd"] = (
            rbd_backend.RbdStorageBackend(
                _conf(
                    work,
                    rbd_backend.GROUP,
                    rbd_backend.OPTS,
                    ceph_conf=ceph.client_conf,
                    user=ceph.client_id,
                    keyring=ceph.client_keyring,
                    secret_uuid=str(uuid.uuid4()),
                    op_timeout=120,
                )
            ),
            {"ceph": _private_file(work, "cephx", ceph.client_key)},
        )
        yield found


@contextlib.contextmanager
def local_file(work: str, n: int) -> Iterator[Target]:
    path = os.path.join(work, "local-%d.raw" % n)
    with open(path, "wb") as f:
        f.truncate(GiB)
    try:
        yield Target("driver=raw,file.driver=file,file.filename=%s" % path, "none")
    finally:
        os.unlink(path)


@contextlib.contextmanager
def fresh_volume(backend: Any, secrets: dict[str, str], n: int) -> Iterator[Target]:
    name = "bench-io-%d" % n
    volume = backend.create_volume(name, 1)
    try:
        yield qemu_io_target(backend.disk_config(volume), secrets)
    finally:
        backend.delete_volume(name)


def verify(target: Target) -> None:
    """Read the 64 MiB back (untimed): the pattern must be there."""
    done = subprocess.run(
        [*target.args(), "-c", "read -q -P 0x5a 0 %dM" % WRITE_MIB],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or done.stdout.strip():
        raise RuntimeError(
            "read-back failed (%d): %s%s" % (done.returncode, done.stdout, done.stderr)
        )


def measure(make: Callable[[], Any], writes: list[float], opens: list[float]) -> None:
    with make() as target:
        opens.append(run_qemu_io(target, write=False))
        writes.append(run_qemu_io(target, write=True))
        verify(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="timed writes per target")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a test run of a few seconds (options given explicitly still win): --rounds 1",
    )
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(rounds=1)
        args = parser.parse_args()
    names = ("local", *BACKENDS)
    writes: dict[str, list[float]] = {name: [] for name in names}
    opens: dict[str, list[float]] = {name: [] for name in names}
    start_s: dict[str, float] = {}
    # NOTE: libvirt's default handler prints every error, such as the iscsi
    # backend's expected "no such secret" before it defines the CHAP secret.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    with tempfile.TemporaryDirectory(prefix="cd-io-bench-") as work:
        os.chmod(work, 0o755)
        with backends(work, start_s) as found:
            for n in range(args.rounds):
                measure(lambda n=n: local_file(work, n), writes["local"], opens["local"])
                for name in BACKENDS:
                    backend, secrets = found[name]
                    measure(
                        lambda b=backend, s=secrets, n=n: fresh_volume(b, s, n),
                        writes[name],
                        opens[name],
                    )
    ms = {
        name: (statistics.median(writes[name]) - statistics.median(opens[name])) * 1000
        for name in names
    }
    print("median of %d, ms     write+flush   open+close    MiB/s" % args.rounds)
    for name in names:
        print(
            "%-18s %12.1f %12.1f %8.1f"
            % (
                name,
                ms[name],
                statistics.median(opens[name]) * 1000,
                WRITE_MIB / (ms[name] / 1000),
            )
        )
    figures: dict[str, Any] = {
        "%s_ratio" % name: round(ms[name] / ms["local"], 2) for name in BACKENDS
    }
    figures.update({"%s_ms" % name: round(ms[name], 1) for name in names})
    # NOTE: how long the throw-away servers take to start is a figure, not
    # a test: it moves with the host's load.
    figures.update({"%s_server_start_s" % name: round(s, 2) for name, s in start_s.items()})
    figures["rounds"] = args.rounds
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
