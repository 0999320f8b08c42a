"""The rbd backend against a real Ceph cluster (``ceph`` fixture): no mocks.

What the backend did is checked with the admin's own rbd/rados bindings:
that a volume is a clone of ``image-<uuid>@base`` and not a copy, its size,
what is left in the pools after a failure.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
import rados
import rbd
from oslo_config import cfg

from compute_driver import domain_xml as lvxml
from compute_driver import exception as cd_exception
from compute_driver.objects import ImageSpec
from storage_backends import base as storage_base
from storage_backends import exception
from storage_backends import rbd as rbd_backend
from tests.functional.bounded_call import call_or_fail_on_hang
from tests.functional.storage.ceph_cluster import CephCluster, _new_key
from tests.functional.storage.conftest import IMAGE_PATTERNS, IMAGE_VIRTUAL_SIZE

GiB = 1024**3


@pytest.fixture
def make_backend(ceph: CephCluster, tmp_path: Path) -> Callable[..., rbd_backend.RbdStorageBackend]:
    """Build a backend as client.cdtest; keyword arguments override ``[rbd]`` options."""

    def make(**overrides: Any) -> rbd_backend.RbdStorageBackend:
        conf = cfg.ConfigOpts()
        conf.register_opt(cfg.StrOpt("state_path", default=str(tmp_path)))
        conf([], project="compute-driver", default_config_files=[])
        options = {
            "pool": "rbd",
            "ceph_conf": ceph.client_conf,
            "user": ceph.client_id,
            "keyring": ceph.client_keyring,
            "secret_uuid": str(uuid.uuid4()),
            "connect_timeout": 5,
            "op_timeout": 10,
        }
        options.update(overrides)
        # NOTE: a new OptGroup, not rbd_backend.GROUP: oslo.config shares a
        # registered group's option table (overrides included) between every
        # ConfigOpts it is registered in, so overrides would leak across tests.
        conf.register_group(cfg.OptGroup("rbd"))
        conf.register_opts(rbd_backend.OPTS, group="rbd")
        for name, value in options.items():
            conf.set_override(name, value, group="rbd")
        return rbd_backend.RbdStorageBackend(conf)

    return make


@pytest.fixture
def backend(make_backend) -> rbd_backend.RbdStorageBackend:
    return make_backend()


@pytest.fixture(scope="session")
def admin(ceph: CephCluster) -> Iterator[rados.Rados]:
    client = ceph.admin()
    yield client
    client.shutdown()


@pytest.fixture
def image(qcow2_image: Path) -> ImageSpec:
    """A new image (new uuid) each test, so each test imports its own."""
    return ImageSpec(
        uuid=str(uuid.uuid4()),
        name="test",
        disk_format="qcow2",
        path=str(qcow2_image),
        virtual_size=IMAGE_VIRTUAL_SIZE,
    )


@pytest.fixture
def volume_id(backend: rbd_backend.RbdStorageBackend) -> Iterator[str]:
    """A fresh volume id, its volume deleted after the test."""
    name = "vol-%s" % uuid.uuid4().hex[:12]
    yield name
    with contextlib.suppress(cd_exception.ComputeDriverError):
        backend.delete_volume(name)


def _images(admin: rados.Rados, pool: str) -> list[str]:
    with admin.open_ioctx(pool) as ioctx:
        return sorted(rbd.RBD().list(ioctx))


@contextlib.contextmanager
def _open(admin: rados.Rados, name: str, pool: str = "rbd") -> Iterator[rbd.Image]:
    with admin.open_ioctx(pool) as ioctx, rbd.Image(ioctx, name) as img:
        yield img


def _data_objects(admin: rados.Rados, img: rbd.Image, pool: str = "rbd") -> int:
    prefix = img.block_name_prefix()
    with admin.open_ioctx(pool) as ioctx:
        return sum(1 for obj in ioctx.list_objects() if obj.key.startswith(prefix))


def _assert_image_content(img: rbd.Image) -> None:
    for offset, byte, length in IMAGE_PATTERNS:
        assert img.read(offset, length) == bytes([byte]) * length
    assert img.read(1024**2, 4096) == bytes(4096)


# --- create ---------------------------------------------------------------


def test_create_from_qcow2_is_a_linked_clone_of_the_imported_image(
    backend, image, volume_id, admin
):
    volume = backend.create_from_image(volume_id, image, 1)

    assert volume.id == volume_id
    assert volume.backend == "rbd"
    assert (volume.size_gb, volume.format, volume.location) == (1, "raw", "rbd/" + volume_id)
    base = "image-" + image.uuid
    with _open(admin, volume_id) as img:
        parent = img.get_parent_image_spec()
        assert (parent["pool_name"], parent["image_name"], parent["snap_name"]) == (
            "rbd",
            base,
            "base",
        )
        assert img.size() == 1 * GiB
        # A clone, not a copy: the volume has no data object of its own ...
        assert _data_objects(admin, img) == 0
        # ... and reads the image's bytes through its parent.
        _assert_image_content(img)
    with _open(admin, base) as img:
        assert img.size() == IMAGE_VIRTUAL_SIZE
        assert img.is_protected_snap("base")
        # Thin import: only the two 4 MiB objects that hold data were written.
        assert _data_objects(admin, img) == 2
    assert not [n for n in _images(admin, "rbd") if ".importing-" in n or ".creating" in n]


def test_create_is_idempotent_and_imports_once(backend, image, volume_id, admin):
    first = backend.create_from_image(volume_id, image, 1)
    with _open(admin, volume_id) as img:
        first_id = img.id()

    again = backend.create_from_image(volume_id, image, 1)
    other = "vol-%s" % uuid.uuid4().hex[:12]
    try:
        backend.create_from_image(other, image, 2)
        assert again == first
        with _open(admin, volume_id) as img:
            assert img.id() == first_id
        assert [n for n in _images(admin, "rbd") if image.uuid in n] == ["image-" + image.uuid]
        with _open(admin, "image-" + image.uuid) as img:
            img.set_snap("base")
            assert sorted(img.list_children()) == sorted([("rbd", volume_id), ("rbd", other)])
    finally:
        backend.delete_volume(other)


def test_volume_is_never_smaller_than_its_image(backend, image, volume_id, admin):
    volume = backend.create_from_image(volume_id, image, 0)
    assert volume.size_gb == 1  # 64 MiB, rounded up to whole GiB
    with _open(admin, volume_id) as img:
        assert img.size() == IMAGE_VIRTUAL_SIZE


def test_clone_chain_longer_than_max_clone_depth_is_flattened(
    make_backend, image, volume_id, admin
):
    backend = make_backend(max_clone_depth=0)
    backend.create_from_image(volume_id, image, 1)
    with _open(admin, volume_id) as img:
        with pytest.raises(rbd.ImageNotFound):
            img.get_parent_image_spec()
        _assert_image_content(img)
        assert _data_objects(admin, img) == 2


def test_image_from_a_raw_file(backend, qcow2_image, tmp_path, volume_id, admin):
    raw = tmp_path / "test.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2_image), str(raw)], check=True)
    spec = ImageSpec(uuid=str(uuid.uuid4()), name="raw", disk_format="raw", path=str(raw))
    backend.create_from_image(volume_id, spec, 1)
    with _open(admin, volume_id) as img:
        _assert_image_content(img)


def test_image_with_a_backing_file_is_refused(backend, qcow2_image, tmp_path, volume_id, admin):
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(qcow2_image)]
        + [str(overlay)],
        check=True,
    )
    spec = ImageSpec(uuid=str(uuid.uuid4()), name="o", disk_format="qcow2", path=str(overlay))
    with pytest.raises(cd_exception.InvalidImage, match="backing"):
        backend.create_from_image(volume_id, spec, 1)
    assert not [n for n in _images(admin, "rbd") if spec.uuid in n or volume_id in n]


def test_image_missing_from_the_store(backend, volume_id, tmp_path):
    spec = ImageSpec(uuid=str(uuid.uuid4()), name="x", disk_format="raw", path=str(tmp_path / "x"))
    with pytest.raises(cd_exception.StorageError, match="not in the image store"):
        backend.create_from_image(volume_id, spec, 1)


# --- resize, delete -------------------------------------------------------


def test_resize_grows_and_refuses_to_shrink(backend, image, volume_id, admin):
    backend.create_from_image(volume_id, image, 1)

    assert backend.resize_volume(volume_id, 3).size_gb == 3
    assert backend.resize_volume(volume_id, 3).size_gb == 3
    with pytest.raises(exception.InvalidVolumeSize, match="shrinking"):
        backend.resize_volume(volume_id, 2)
    with _open(admin, volume_id) as img:
        assert img.size() == 3 * GiB
    with pytest.raises(exception.BackendVolumeNotFound):
        backend.resize_volume("vol-missing", 3)


def test_delete_is_idempotent_and_keeps_the_image(backend, image, volume_id, admin):
    backend.create_from_image(volume_id, image, 1)
    backend.create_snapshot(volume_id, "s1")

    backend.delete_volume(volume_id)
    backend.delete_volume(volume_id)

    names = _images(admin, "rbd")
    assert volume_id not in names
    assert "image-" + image.uuid in names


def test_delete_removes_a_half_made_volume(backend, image, volume_id, admin):
    backend.create_from_image(volume_id, image, 1)
    with admin.open_ioctx("rbd") as ioctx:
        rbd.RBD().rename(ioctx, volume_id, volume_id + ".creating")
    backend.delete_volume(volume_id)
    assert not [n for n in _images(admin, "rbd") if n.startswith(volume_id)]


def test_delete_refuses_a_volume_with_clones(backend, image, volume_id, admin):
    backend.create_from_image(volume_id, image, 1)
    backend.create_snapshot(volume_id, "golden")
    with admin.open_ioctx("rbd") as ioctx:
        with rbd.Image(ioctx, volume_id) as img:
            img.protect_snap("golden")
        rbd.RBD().clone(ioctx, volume_id, "golden", ioctx, volume_id + "-child")
    try:
        with pytest.raises(exception.VolumeHasClones, match=volume_id + "-child"):
            backend.delete_volume(volume_id)
        with pytest.raises(exception.VolumeHasClones):
            backend.delete_snapshot(volume_id, "golden")
        assert volume_id in _images(admin, "rbd")
    finally:
        with admin.open_ioctx("rbd") as ioctx:
            rbd.RBD().remove(ioctx, volume_id + "-child")
    backend.delete_volume(volume_id)
    assert volume_id not in _images(admin, "rbd")


def test_delete_refuses_a_volume_open_by_a_client(backend, image, volume_id, admin):
    backend.create_from_image(volume_id, image, 1)
    backend.create_snapshot(volume_id, "s")
    with _open(admin, volume_id):  # a writable open watches the image, as QEMU does
        with pytest.raises(exception.VolumeBusy, match="open by"):
            backend.delete_volume(volume_id)
        with pytest.raises(exception.VolumeBusy, match="stop the guest"):
            backend.revert_to_snapshot(volume_id, "s")
    assert volume_id in _images(admin, "rbd")


def test_reserved_and_unsafe_names(backend, image):
    for bad in ("image-" + image.uuid, "../x", "a/b", "a@b", ""):
        with pytest.raises(exception.InvalidVolumeName):
            backend.create_from_image(bad, image, 1)
        with pytest.raises(exception.InvalidVolumeName):
            backend.delete_volume(bad)


# --- snapshots ------------------------------------------------------------


def test_snapshot_revert_and_delete(backend, image, volume_id, admin):
    backend.create_from_image(volume_id, image, 1)
    backend.create_snapshot(volume_id, "before")
    with _open(admin, volume_id) as img:
        img.write(b"changed!", 0)
    with pytest.raises(cd_exception.DuplicateName):
        backend.create_snapshot(volume_id, "before")
    with pytest.raises(exception.VolumeSnapshotNotFound):
        backend.revert_to_snapshot(volume_id, "never")

    snaps = backend.list_snapshots(volume_id)
    assert [s["name"] for s in snaps] == ["before"]
    assert snaps[0]["size_gb"] == 1 and snaps[0]["created_at"].endswith("+00:00")

    backend.revert_to_snapshot(volume_id, "before")
    with _open(admin, volume_id) as img:
        _assert_image_content(img)

    backend.delete_snapshot(volume_id, "before")
    backend.delete_snapshot(volume_id, "before")
    assert backend.list_snapshots(volume_id) == []


# --- capacity, disk -------------------------------------------------------


def test_capacity_counts_what_volumes_promise(backend, image, volume_id, admin):
    before = backend.capacity()
    backend.create_from_image(volume_id, image, 2)
    after = backend.capacity()

    assert isinstance(after, storage_base.Capacity)
    assert after.provisioned - before.provisioned == 2 * GiB + IMAGE_VIRTUAL_SIZE
    assert 0 <= after.free <= after.total
    if not _has_mgr(admin):
        assert (after.total, after.free) == (0, 0)  # Ceph reports space through its mgr


def _has_mgr(admin: rados.Rados) -> bool:
    ret, out, _ = admin.mon_command(json.dumps({"prefix": "mgr dump", "format": "json"}), b"")
    return ret == 0 and bool(json.loads(out).get("available"))


def test_disk_config_names_the_monitors_user_and_secret(backend, image, volume_id, ceph):
    volume = backend.create_from_image(volume_id, image, 1)
    disk = backend.disk_config(volume)

    assert (disk.type, disk.device, disk.driver_name, disk.driver_type) == (
        "network",
        "disk",
        "qemu",
        "raw",
    )
    assert (disk.source_protocol, disk.source_name) == ("rbd", "rbd/" + volume_id)
    assert [(h.name, h.port) for h in disk.hosts] == [("127.0.0.1", ceph.mon_port_v1)]
    assert (disk.auth_username, disk.auth_secret_type) == (ceph.client_id, "ceph")
    assert disk.auth_secret_uuid == backend.opts.secret_uuid


def test_describe(backend):
    assert backend.describe().to_wire() == {
        "name": "rbd",
        "shared": True,
        "formats": ["raw"],
        "linked_clone": True,
        "snapshots": True,
        "resize": True,
        "image_cache": False,
        "export": False,
    }


# --- failures -------------------------------------------------------------


def test_pool_outside_the_caps_is_permission_denied_and_leaves_nothing(
    make_backend, image, volume_id, admin, ceph
):
    backend = make_backend(pool="other")
    with pytest.raises(exception.PermissionDenied) as caught:
        backend.create_from_image(volume_id, image, 1)

    message = caught.value.message
    assert "client.cdtest" in message and "pool other" in message
    assert ceph.client_key not in message
    assert _images(admin, "other") == []
    with admin.open_ioctx("other") as ioctx:
        assert list(ioctx.list_objects()) == []


def test_wrong_key_is_permission_denied(make_backend, tmp_path, ceph):
    keyring = tmp_path / "wrong.keyring"
    wrong = _new_key()
    keyring.write_text("[client.cdtest]\n\tkey = %s\n" % wrong)
    with pytest.raises(exception.PermissionDenied, match="authentication") as caught:
        make_backend(keyring=str(keyring)).capacity()
    assert wrong not in caught.value.message and ceph.client_key not in caught.value.message


def _dead_conf(ceph: CephCluster, tmp_path: Path) -> str:
    path = tmp_path / "dead.conf"
    # A port nobody listens on: the monitor is "down".
    path.write_text("[global]\nmon host = 127.0.0.1:%d\n" % _closed_port())
    return str(path)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("call", ["create", "delete", "capacity", "disk_config"])
def test_dead_cluster_is_unavailable_within_connect_timeout(
    make_backend, image, ceph, tmp_path, call
):
    timeout = 2
    backend = make_backend(ceph_conf=_dead_conf(ceph, tmp_path), connect_timeout=timeout)
    calls = {
        "create": lambda: backend.create_from_image("vol-dead", image, 1),
        "delete": lambda: backend.delete_volume("vol-dead"),
        "capacity": backend.capacity,
        "disk_config": lambda: backend.disk_config(backend._volume("vol-dead", GiB)),
    }
    # NOTE: the message proves which timeout fired; the wall time is not
    # asserted (it moves with the host's load), only that the call ends.
    with pytest.raises(exception.BackendUnavailable, match="within %d s" % timeout):
        call_or_fail_on_hang(calls[call])


@contextlib.contextmanager
def _frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_frozen_osd_is_unavailable_within_op_timeout(make_backend, image, ceph, admin):
    op_timeout = 2
    backend = make_backend(op_timeout=op_timeout)
    name = "vol-%s" % uuid.uuid4().hex[:12]
    with _frozen(ceph.pids["osd.0"]):
        with pytest.raises(
            exception.BackendUnavailable, match="did not answer within %d s" % op_timeout
        ):
            call_or_fail_on_hang(lambda: backend.create_from_image(name, image, 1))
    # The cluster carries on, and nothing half-made is left.
    assert not [n for n in _images(admin, "rbd") if image.uuid in n or name in n]


def test_the_key_is_never_logged_nor_in_errors_nor_in_arguments(
    make_backend, image, ceph, tmp_path, caplog, monkeypatch
):
    key = ceph.client_key
    argv: list[list[str]] = []
    real_run = subprocess.run

    def spy(args, *a, **kw):
        argv.append(list(args))
        return real_run(args, *a, **kw)

    monkeypatch.setattr(subprocess, "run", spy)
    caplog.set_level(logging.DEBUG)
    messages = []
    backend = make_backend()
    name = "vol-%s" % uuid.uuid4().hex[:12]
    volume = backend.create_from_image(name, image, 1)
    disk = backend.disk_config(volume)
    disk.target_dev = "vda"
    backend.capacity()
    backend.delete_volume(name)
    for failing in (
        lambda: make_backend(pool="other").create_from_image(name, image, 1),
        lambda: make_backend(ceph_conf=_dead_conf(ceph, tmp_path), connect_timeout=1).capacity(),
        lambda: backend.resize_volume(name, 1),
    ):
        with pytest.raises(cd_exception.ComputeDriverError) as caught:
            failing()
        messages.append(str(caught.value))
        messages.append(repr(caught.value.__cause__))

    # it did run: the spy saw it (info and check run under prlimit, disk_image.qemu_img)
    assert argv and all("qemu-img" in a and a[0] in ("qemu-img", "prlimit") for a in argv)
    assert "Imported image" in caplog.text
    for text in [caplog.text, disk.to_string(), *messages, *(" ".join(a) for a in argv)]:
        assert key not in text


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


@contextlib.contextmanager
def _ceph_secret(conn: libvirt.virConnect, ceph: CephCluster, secret_uuid: str) -> Iterator[None]:
    secret_xml = (
        "<secret ephemeral='yes' private='yes'><uuid>%s</uuid>"
        "<usage type='ceph'><name>cd-test-%s</name></usage></secret>" % (secret_uuid, secret_uuid)
    )
    secret = conn.secretDefineXML(secret_xml)
    try:
        # NOTE: through the API, not `virsh secret-set-value`, so that the key
        # is in no process's arguments.
        secret.setValue(base64.b64decode(ceph.client_key))
        yield
    finally:
        secret.undefine()


def test_guest_boots_with_the_rbd_disk(
    make_backend, image, volume_id, ceph, admin, libvirt_conn, tmp_path
):
    secret_uuid = str(uuid.uuid4())
    backend = make_backend(secret_uuid=secret_uuid)
    volume = backend.create_from_image(volume_id, image, 1)
    disk = backend.disk_config(volume)
    disk.target_dev, disk.target_bus = "vda", "virtio"
    dom_xml = lvxml.Domain(
        type="qemu",
        name="cd-rbd-test-%s" % volume_id,
        memory_kib=65536,
        vcpus=1,
        os=lvxml.OS(type="hvm", arch="x86_64", machine="pc"),
        devices=[disk, lvxml.MemBalloon(model="none")],
    ).to_string()
    if shutil.which("virt-xml-validate"):
        (tmp_path / "domain.xml").write_text(dom_xml)
        subprocess.run(["virt-xml-validate", str(tmp_path / "domain.xml"), "domain"], check=True)
    with _ceph_secret(libvirt_conn, ceph, secret_uuid):
        dom = libvirt_conn.createXML(dom_xml, 0)
        try:
            state, _ = dom.state()
            assert state == libvirt.VIR_DOMAIN_RUNNING
            with admin.open_ioctx("rbd") as ioctx:
                with rbd.Image(ioctx, volume_id, read_only=True) as img:
                    # QEMU opened the volume over librbd: it watches it.
                    assert list(img.watchers_list())
            with pytest.raises(exception.VolumeBusy):
                backend.delete_volume(volume_id)
        finally:
            dom.destroy()
    backend.delete_volume(volume_id)
