"""The nfs backend in direct mode against a real nfs-ganesha (``nfs_server`` fixture).

What the backend did is checked from outside: ``qemu-img info`` over
``nfs://`` (QEMU's own NFS client) and the export directory on this host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from oslo_config import cfg

from compute_driver import domain_xml as lvxml
from compute_driver import exception as cd_exception
from compute_driver.objects import ImageSpec
from storage_backends import exception
from storage_backends import nfs as nfs_backend
from tests.functional.bounded_call import call_or_fail_on_hang
from tests.functional.storage.conftest import IMAGE_PATTERNS, IMAGE_VIRTUAL_SIZE
from tests.functional.storage.nfs_server import MissingProgram, NfsServer, running_nfs_server

GiB = 1024**3


@pytest.fixture(scope="module")
def nfs_server() -> Iterator[NfsServer]:
    try:
        with running_nfs_server() as server:
            yield server
    except MissingProgram as exc:
        pytest.fail(str(exc))


@pytest.fixture
def make_backend(nfs_server: NfsServer, tmp_path: Path) -> Callable[..., Any]:
    """Build a direct-mode backend; keyword arguments override ``[nfs]`` options."""

    def make(**overrides: Any) -> nfs_backend.NfsStorageBackend:
        conf = cfg.ConfigOpts()
        conf.register_opt(cfg.StrOpt("state_path", default=str(tmp_path)))
        # NOTE: a new OptGroup: overrides live in the group object.
        conf.register_group(cfg.OptGroup("nfs"))
        conf.register_opts(nfs_backend.OPTS, group="nfs")
        conf([], project="compute-driver", default_config_files=[])
        options = {
            "access_mode": "direct",
            "server": nfs_server.host,
            "export": nfs_server.export,
            "timeout": 5,
        }
        options.update(overrides)
        for name, value in options.items():
            conf.set_override(name, value, group="nfs")
        return nfs_backend.NfsStorageBackend(conf)

    return make


@pytest.fixture
def backend(make_backend) -> nfs_backend.NfsStorageBackend:
    return make_backend()


@pytest.fixture
def image(qcow2_image: Path) -> ImageSpec:
    return ImageSpec(
        uuid=str(uuid.uuid4()),
        name="test",
        disk_format="qcow2",
        path=str(qcow2_image),
        virtual_size=IMAGE_VIRTUAL_SIZE,
    )


@pytest.fixture
def volume_id(backend) -> Iterator[str]:
    name = "vol-%s" % uuid.uuid4().hex[:12]
    yield name
    with contextlib.suppress(cd_exception.ComputeDriverError):
        backend.delete_volume(name)


def _info(url: str) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return json.loads(out)


def _read(url: str, offset: int, length: int, byte: int) -> None:
    done = subprocess.run(
        ["qemu-io", "-r", "-U", "-c", "read -P 0x%x %d %d" % (byte, offset, length), url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and "failed" not in done.stdout, done.stdout + done.stderr


def _write(url: str, offset: int, length: int, byte: int) -> None:
    subprocess.run(
        ["qemu-io", "-c", "write -P 0x%x %d %d" % (byte, offset, length), url],
        capture_output=True,
        check=True,
        timeout=30,
    )


def _volume_files(nfs_server: NfsServer) -> list[str]:
    return sorted(os.listdir(os.path.join(nfs_server.export_dir, "volumes")))


def test_create_get_resize_and_delete(backend, volume_id, nfs_server):
    volume = backend.create_volume(volume_id, 1)
    assert (volume.size_gb, volume.format) == (1, "qcow2")
    assert volume.location == nfs_server.url("volumes/%s.qcow2" % volume_id)
    assert _info(volume.location)["virtual-size"] == GiB
    assert backend.get_volume(volume_id) == volume
    assert backend.create_volume(volume_id, 3) == volume  # idempotent

    grown = backend.resize_volume(volume_id, 2)
    assert grown.size_gb == 2 and _info(volume.location)["virtual-size"] == 2 * GiB
    with pytest.raises(exception.InvalidVolumeSize):
        backend.resize_volume(volume_id, 1)

    backend.delete_volume(volume_id)
    backend.delete_volume(volume_id)
    with pytest.raises(exception.BackendVolumeNotFound):
        backend.get_volume(volume_id)
    assert volume_id + ".qcow2" not in _volume_files(nfs_server)


def test_raw_volume(make_backend, volume_id, nfs_server):
    backend = make_backend(volume_format="raw")
    volume = backend.create_volume(volume_id, 1)
    assert volume.format == "raw"
    assert (
        os.path.getsize(os.path.join(nfs_server.export_dir, "volumes", volume_id + ".raw")) == GiB
    )
    backend.delete_volume(volume_id)


def test_snapshot_revert_and_delete(backend, image, volume_id):
    volume = backend.create_from_image(volume_id, image, 1)
    backend.create_snapshot(volume_id, "before")
    with pytest.raises(cd_exception.DuplicateName):
        backend.create_snapshot(volume_id, "before")
    _write(volume.location, 0, 65536, 0x11)
    _read(volume.location, 0, 65536, 0x11)
    assert [s["name"] for s in backend.list_snapshots(volume_id)] == ["before"]

    backend.revert_to_snapshot(volume_id, "before")
    offset, byte, length = IMAGE_PATTERNS[0]
    _read(volume.location, offset, length, byte)
    with pytest.raises(exception.VolumeSnapshotNotFound):
        backend.revert_to_snapshot(volume_id, "nope")

    backend.delete_snapshot(volume_id, "before")
    backend.delete_snapshot(volume_id, "before")
    assert backend.list_snapshots(volume_id) == []


def test_create_from_image_is_a_linked_clone(backend, image, volume_id, nfs_server):
    volume = backend.create_from_image(volume_id, image, 1)
    info = _info(volume.location)
    assert info["backing-filename"] == nfs_server.url("images/%s.qcow2" % image.uuid)
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == GiB
    assert info["actual-size"] < 1024**2  # the data stays in the cached image
    for offset, byte, length in IMAGE_PATTERNS:
        _read(volume.location, offset, length, byte)
    cached = os.path.join(nfs_server.export_dir, "images", image.uuid + ".qcow2")
    assert os.stat(cached).st_mode & 0o777 == 0o644  # QEMU reads backing files as itself

    # A cached image that a volume backs onto survives cleanup; then it goes.
    # (Other tests' images may go too: the server is shared by the module.)
    assert image.uuid + ".qcow2" not in backend.cleanup_image_cache(min_age=0)
    assert os.path.exists(cached)
    backend.delete_volume(volume_id)
    assert image.uuid + ".qcow2" in backend.cleanup_image_cache(min_age=0)
    assert not os.path.exists(cached)


def test_full_copy_and_capacity(backend, image, volume_id):
    volume = backend.create_from_image(volume_id, image, 2, linked=False)
    assert "backing-filename" not in _info(volume.location)
    capacity = backend.capacity()
    assert capacity.total > 0 and 0 < capacity.free <= capacity.total
    assert capacity.provisioned >= 2 * GiB


def test_full_backend_is_no_space_and_leaves_nothing(make_backend, volume_id, nfs_server):
    backend = make_backend(preallocation="falloc")
    free = backend.capacity().free
    with pytest.raises(exception.NoSpace):
        backend.create_volume(volume_id, free // GiB + 1)
    assert not [n for n in _volume_files(nfs_server) if volume_id in n]


def test_unsafe_names_are_refused(backend, image):
    for name in ("../x", "a/b", "x\0y", "<disk/>", "a&b"):
        with pytest.raises(exception.InvalidVolumeName):
            backend.create_volume(name, 1)
        with pytest.raises(exception.InvalidVolumeName):
            backend.create_from_image(name, image, 1)


def _closed_port_host() -> str:
    # NOTE: 127.0.0.2 is loopback too, but neither the portmapper nor ganesha
    # listens there: the "server" refuses every connection.
    return "127.0.0.2"


@pytest.mark.parametrize("call", ["create", "get", "delete", "capacity", "snapshot"])
def test_unreachable_server_is_unavailable_within_the_timeout(make_backend, image, call):
    backend = make_backend(server=_closed_port_host(), timeout=2)
    calls = {
        "create": lambda: backend.create_from_image("vol-dead", image, 1),
        "get": lambda: backend.get_volume("vol-dead"),
        "delete": lambda: backend.delete_volume("vol-dead"),
        "capacity": backend.capacity,
        "snapshot": lambda: backend.create_snapshot("vol-dead", "s"),
    }
    with pytest.raises(exception.BackendUnavailable, match=r"NFS server 127\.0\.0\.2"):
        call_or_fail_on_hang(calls[call])


@contextlib.contextmanager
def _frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_frozen_server_is_unavailable_within_the_timeout_and_leaves_nothing(
    make_backend, image, volume_id, nfs_server
):
    backend = make_backend(timeout=2)
    backend.capacity()  # the layout exists
    with _frozen(nfs_server.pids["ganesha"]):
        # NOTE: the message proves which timeout fired; the wall time is not
        # asserted (it moves with the host's load), only that the call ends.
        with pytest.raises(
            exception.BackendUnavailable, match=r"NFS server 127\.0\.0\.1.* within 2 s"
        ):
            call_or_fail_on_hang(lambda: backend.create_from_image(volume_id, image, 1))
    assert not [n for n in _volume_files(nfs_server) if volume_id in n]
    backend.create_volume(volume_id, 1)  # the server carries on


# --- a real guest ---------------------------------------------------------


@pytest.fixture
def libvirt_conn() -> Iterator[libvirt.virConnect]:
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as exc:
        pytest.fail(
            "libvirtd does not answer on qemu:///system (%s); run tools/start-services.sh" % exc
        )
    yield conn
    conn.close()


def test_guest_runs_with_the_nfs_disk(backend, image, volume_id, libvirt_conn, tmp_path):
    volume = backend.create_from_image(volume_id, image, 1)
    disk = backend.disk_config(volume)
    disk.target_dev, disk.target_bus = "vda", "virtio"
    assert (disk.type, disk.source_protocol) == ("network", "nfs")
    assert (disk.source_identity_user, disk.source_identity_group) == ("root", "root")
    dom_xml = lvxml.Domain(
        type="qemu",
        name="cd-nfs-test-%s" % volume_id,
        memory_kib=65536,
        vcpus=1,
        os=lvxml.OS(type="hvm", arch="x86_64", machine="pc"),
        devices=[disk, lvxml.MemBalloon(model="none")],
    ).to_string()
    if shutil.which("virt-xml-validate"):
        (tmp_path / "domain.xml").write_text(dom_xml)
        subprocess.run(["virt-xml-validate", str(tmp_path / "domain.xml"), "domain"], check=True)
    dom = libvirt_conn.createXML(dom_xml, 0)
    try:
        state, _ = dom.state()
        assert state == libvirt.VIR_DOMAIN_RUNNING
        assert "/export/volumes/%s.qcow2" % volume_id in dom.XMLDesc(0)
    finally:
        dom.destroy()
