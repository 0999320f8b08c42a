"""The nfs backend without a server: options, mount mode on a local directory, disks.

Direct mode against a real nfs-ganesha is in tests/functional/storage/test_nfs_backend.py.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver import exception as cd_exception
from storage_backends import base, exception, nfs_utils
from storage_backends import nfs as nfs_backend
from tests.functional.storage import portmapper

GiB = 1024**3


def _conf(tmp_path: Path, **options: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.StrOpt("state_path", default=str(tmp_path)))
    # NOTE: a new OptGroup: oslo.config keeps overrides in the group object.
    conf.register_group(cfg.OptGroup("nfs"))
    conf.register_opts(nfs_backend.OPTS, group="nfs")
    conf([], project="compute-driver", default_config_files=[])
    for name, value in options.items():
        conf.set_override(name, value, group="nfs")
    return conf


@pytest.fixture
def mounted(tmp_path: Path, monkeypatch) -> Path:
    """A directory that passes for the mounted export."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(
        os.path, "ismount", lambda p: str(p) == str(mount_point) or real(p)
    )  # fmt: skip
    return mount_point


def _mount_backend(tmp_path: Path, mount_point: Path, **options: Any):
    return nfs_backend.NfsStorageBackend(
        _conf(tmp_path, access_mode="mount", mount_point=str(mount_point), **options)
    )


def test_options(tmp_path):
    (group, opts) = next(iter(nfs_backend.list_opts().items()))
    assert group.name == "nfs" == nfs_backend.NfsStorageBackend.name
    assert [o.name for o in opts] == [
        "access_mode",
        "server",
        "export",
        "mount_point",
        "timeout",
        "copy_timeout",
        "qemu_user",
        "qemu_group",
        "volume_format",
        "preallocation",
        "image_cache_min_age",
    ]
    assert all(o.help for o in opts)
    conf = _conf(tmp_path)
    assert (conf.nfs.access_mode, conf.nfs.export, conf.nfs.timeout) == ("direct", "/export", 30)
    with pytest.raises(ValueError):
        conf.set_override("timeout", 0, group="nfs")
        conf.nfs.timeout  # noqa: B018 - the bound is checked on read
    with pytest.raises(ValueError):
        conf.set_override("access_mode", "kernel", group="nfs")


def test_direct_mode_needs_a_server(tmp_path):
    with pytest.raises(cd_exception.InvalidConfig, match="server"):
        nfs_backend.NfsStorageBackend(_conf(tmp_path))


def test_direct_mode_describe_and_network_disk(tmp_path):
    backend = nfs_backend.NfsStorageBackend(
        _conf(tmp_path, server="nfs1.example", export="/srv/vols/", qemu_user="107")
    )
    assert backend.describe().to_wire() == {
        "export": True,
        "name": "nfs",
        "shared": True,
        "access_mode": "direct",
        "formats": ["qcow2", "raw"],
        "linked_clone": True,
        "snapshots": True,
        "resize": True,
        "image_cache": True,
    }
    volume = base.Volume(
        id="v1", backend="nfs", size_gb=1, format="qcow2", location=backend.files.location(
            "volumes", "v1.qcow2")
    )  # fmt: skip
    assert volume.location == "nfs://nfs1.example/srv/vols/volumes/v1.qcow2"
    disk = backend.disk_config(volume)
    disk.target_dev = "vda"
    assert disk.to_string() == (
        '<disk type="network" device="disk">\n'
        '  <driver name="qemu" type="qcow2" cache="none" discard="unmap"/>\n'
        '  <source protocol="nfs" name="/srv/vols/volumes/v1.qcow2">\n'
        '    <host name="nfs1.example"/>\n'
        '    <identity user="107" group="root"/>\n'
        "  </source>\n"
        '  <target dev="vda"/>\n'
        "</disk>\n"
    )


def test_disk_config_refuses_an_unsafe_volume_id(tmp_path):
    backend = nfs_backend.NfsStorageBackend(_conf(tmp_path, server="127.0.0.1"))
    volume = base.Volume(id="../x", backend="nfs", size_gb=1, format="qcow2", location="")
    with pytest.raises(exception.InvalidVolumeName):
        backend.disk_config(volume)


def test_export_urls():
    where = nfs_utils.Export(backend="nfs", server="h", export="/e", directory="", timeout=1)
    assert where.path("volumes/a") == "/volumes/a"
    assert where.url("volumes/a") == "nfs://h/e/volumes/a"
    files = nfs_utils.NfsFiles(where, copy_timeout=99)
    assert (files.timeout(copy=False), files.timeout(copy=True)) == (1, 99)
    gone = files.unavailable('Failed to mount nfs share: mount/mnt call failed with "RPC: ..."')
    assert isinstance(gone, exception.BackendUnavailable) and "NFS server h" in str(gone)
    assert files.unavailable("Image is not in qcow2 format") is None


# --- mount mode: the dir backend's logic on the mounted export -------------


def test_mount_mode_volumes_are_files_on_the_mount(tmp_path, mounted):
    backend = _mount_backend(tmp_path, mounted)
    assert backend.describe().shared is True
    volume = backend.create_volume("v1", 1)
    assert volume.location == str(mounted / "volumes" / "v1.qcow2")
    assert backend.resize_volume("v1", 2).size_gb == 2
    backend.create_snapshot("v1", "s1")
    assert [s["name"] for s in backend.list_snapshots("v1")] == ["s1"]
    disk = backend.disk_config(volume)
    assert (disk.type, disk.source_file, disk.driver_type) == ("file", volume.location, "qcow2")
    assert backend.capacity().provisioned == 2 * GiB
    backend.delete_volume("v1")
    assert os.listdir(mounted / "volumes") == []


def test_mount_mode_refuses_an_unmounted_mount_point(tmp_path):
    (tmp_path / "mnt").mkdir()
    backend = _mount_backend(tmp_path, tmp_path / "mnt", server="nfs1")
    with pytest.raises(exception.BackendUnavailable, match="nothing is mounted"):
        backend.create_volume("v1", 1)
    # Nothing was written to the local disk under the mount point.
    assert os.listdir(tmp_path / "mnt") == []


def test_mount_mode_hung_mount_is_unavailable_within_the_timeout(tmp_path, mounted, monkeypatch):
    backend = _mount_backend(tmp_path, mounted, timeout=1)
    release = threading.Event()
    real_statvfs = os.statvfs

    def hung(path: Any) -> Any:
        if str(path) == str(mounted):
            release.wait(30)  # a dead hard mount
        return real_statvfs(path)

    monkeypatch.setattr(os, "statvfs", hung)
    # NOTE: no wall times: the message says which path answered (the 1 s
    # timeout; then "still waiting", which a call that waited for the stuck
    # check again could not say), and the hung statvfs ends by itself in 30 s.
    try:
        with pytest.raises(exception.BackendUnavailable, match="no answer within 1 s"):
            backend.get_volume("v1")
        # While the check is stuck, the next call fails at once.
        with pytest.raises(exception.BackendUnavailable, match="still waiting"):
            backend.capacity()
    finally:
        release.set()


# --- our portmapper's protocol ---------------------------------------------


def _call(prog: int, vers: int, proc: int, args: bytes = b"") -> bytes:
    return struct.pack(">IIIIII", 7, 0, 2, prog, vers, proc) + bytes(16) + args


def _result(reply: bytes | None) -> bytes:
    assert reply is not None
    xid, mtype, stat, _, _, accept = struct.unpack(">IIIIII", reply[:24])
    assert (xid, mtype, stat, accept) == (7, 1, 0, 0)
    return reply[24:]


def test_portmapper_set_getport_getaddr_dump():
    registry = portmapper.Registry({"tcp": "127.0.0.1.0.111"})
    rpcb = (
        struct.pack(">II", 100003, 3)
        + portmapper.xdr_string("tcp6")
        + portmapper.xdr_string("::ffff:127.0.0.1.8.1")
        + portmapper.xdr_string("ganesha")
    )
    assert _result(portmapper.handle_call(registry, _call(100000, 4, 1, rpcb))) == b"\0\0\0\1"
    # portmap v2 GETPORT for tcp finds the tcp6 registration (QEMU's question).
    getport = struct.pack(">IIII", 100003, 3, 6, 0)
    assert _result(portmapper.handle_call(registry, _call(100000, 2, 3, getport))) == (
        struct.pack(">I", 2049)
    )
    # rpcbind GETADDR for "tcp" answers with a v4 address (rpcinfo -T tcp's question).
    ask = struct.pack(">II", 100003, 3) + b"".join(
        portmapper.xdr_string(s) for s in ("tcp", "", "")
    )
    answer = _result(portmapper.handle_call(registry, _call(100000, 3, 3, ask)))
    assert portmapper.Decoder(answer).string() == "127.0.0.1.8.1"
    dump = _result(portmapper.handle_call(registry, _call(100000, 2, 4)))
    assert struct.pack(">IIIII", 1, 100003, 3, 6, 2049) in dump
    # Unknown program and procedure.
    reply = portmapper.handle_call(registry, _call(100003, 3, 0))
    assert reply is not None and struct.unpack(">I", reply[20:24])[0] == portmapper.PROG_UNAVAIL
    reply = portmapper.handle_call(registry, _call(100000, 2, 99, bytes(16)))
    assert reply is not None and struct.unpack(">I", reply[20:24])[0] == portmapper.PROC_UNAVAIL
    assert portmapper.handle_call(registry, b"\0\0") is None  # garbage: no reply


def test_nfs_imports_the_shared_file_logic_from_its_own_modules_not_the_dir_plugin():
    # NOTE: one plugin never imports another; the shared piece lives in
    # storage_backends.files and storage_backends.filestore.
    import ast

    for module in (nfs_backend, nfs_utils):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {
            node.module + "." + alias.name if node.module == "storage_backends" else node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            for alias in node.names
        }
        assert "storage_backends.dir" not in imported, module.__name__
