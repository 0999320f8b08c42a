"""The iscsi backend against a real tgtd target (``iscsi_target.py``): no mocks.

What the backend did is checked from outside it: the claim LUN's and the
LUNs' backing files, tgtd's own session list, and reads through libiscsi.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
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
from storage_backends import base, exception, iscsi_utils
from storage_backends import iscsi as iscsi_backend
from tests.functional.storage.conftest import IMAGE_PATTERNS, IMAGE_VIRTUAL_SIZE
from tests.functional.storage.iscsi_target import (
    INSTALL_HINT,
    IscsiTarget,
    missing_programs,
    running_target,
)

GiB = 1024**3
CLAIM_LUN = 1


@pytest.fixture(scope="module")
def target() -> Iterator[IscsiTarget]:
    missing = missing_programs()
    if missing:
        pytest.fail("%s not installed: %s" % (", ".join(missing), INSTALL_HINT))
    with running_target() as t:
        yield t


@pytest.fixture(scope="module")
def libvirt_conn() -> Iterator[libvirt.virConnect]:
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as exc:
        pytest.fail("libvirtd does not answer on qemu:///system (%s)" % exc)
    yield conn
    conn.close()


@pytest.fixture
def fresh_claims(target: IscsiTarget) -> None:
    """Each test starts with a blank claim LUN (written behind tgtd: it does not cache)."""
    with open(target.luns[CLAIM_LUN], "r+b") as f:
        f.write(bytes(os.path.getsize(target.luns[CLAIM_LUN])))


@pytest.fixture
def secret_uuid(libvirt_conn: libvirt.virConnect) -> Iterator[str]:
    """A UUID for the CHAP secret; the secret the backend defines is removed after."""
    value = str(uuid.uuid4())
    yield value
    with contextlib.suppress(libvirt.libvirtError):
        libvirt_conn.secretLookupByUUIDString(value).undefine()


@pytest.fixture
def make_backend(
    target: IscsiTarget,
    tmp_path: Path,
    secret_uuid: str,
    fresh_claims: None,
    libvirt_conn: libvirt.virConnect,
) -> Callable[..., iscsi_backend.IscsiStorageBackend]:
    """A backend for the target; ``password=`` writes another password file."""

    def make(password: str | None = None, **overrides: Any) -> iscsi_backend.IscsiStorageBackend:
        password_file = tmp_path / ("chap-%s" % uuid.uuid4().hex[:6])
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(target.password if password is None else password)
        conf = cfg.ConfigOpts()
        conf([], project="compute-driver", default_config_files=[])
        # NOTE: a new OptGroup: a registered group's overrides leak across ConfigOpts.
        conf.register_group(cfg.OptGroup("iscsi"))
        conf.register_opts(iscsi_backend.OPTS, group="iscsi")
        options: dict[str, Any] = {
            "portal": target.portal,
            "targets": [target.iqn],
            "initiator_iqn": target.initiator,
            "claim_lun": CLAIM_LUN,
            "chap_username": target.username,
            "chap_secret_uuid": secret_uuid,
            "chap_password_file": str(password_file),
            "connect_timeout": 5,
            "op_timeout": 10,
            "lock_timeout": 5,
        }
        options.update(overrides)
        for name, value in options.items():
            conf.set_override(name, value, group="iscsi")
        # NOTE: lent the test's libvirt connection, as the agent lends its own.
        services = base.Services(hypervisor=lambda: libvirt_conn)
        return iscsi_backend.IscsiStorageBackend(conf, services=services)

    return make


@pytest.fixture
def backend(make_backend) -> iscsi_backend.IscsiStorageBackend:
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


def _session(backend: iscsi_backend.IscsiStorageBackend, target: IscsiTarget):
    return iscsi_utils.Session(backend.settings, target.iqn)


def _claim_blocks(target: IscsiTarget) -> bytes:
    with open(target.luns[CLAIM_LUN], "rb") as f:
        return f.read(512 * 8)


# --- claims ---------------------------------------------------------------


def test_claims_the_smallest_fitting_lun_and_every_host_sees_it(make_backend, target):
    backend = make_backend()
    other_host = make_backend()  # another agent: it shares nothing with the first but the target
    assert backend.capacity() == iscsi_backend.base.Capacity(
        total=4 * GiB, free=4 * GiB, provisioned=0
    )

    big = backend.create_volume("vol-big", 2)
    small = backend.create_volume("vol-small", 1)
    again = other_host.create_volume("vol-small", 1)  # idempotent, from any host
    third = other_host.create_volume("vol-third", 1)

    assert (big.location, big.size_gb) == (target.iqn + "/4", 2)
    assert (small.location, small.size_gb, small.format) == (target.iqn + "/2", 1, "raw")
    assert again == small
    assert third.location == target.iqn + "/3"
    assert other_host.get_volume("vol-big") == big
    assert backend.get_volume("vol-third") == third
    assert other_host.capacity().free == 0
    # The claim table is on the target itself: header in block 0, LUN n in block n.
    blocks = _claim_blocks(target)
    assert blocks.startswith(iscsi_utils.HEADER_MAGIC)
    record = iscsi_utils.decode_record(blocks[2 * 512 : 3 * 512])
    assert record is not None
    assert (record["volume"], record["state"]) == ("vol-small", "ready")

    with pytest.raises(exception.NoSpace):
        backend.create_volume("vol-more", 1)

    for name in ("vol-big", "vol-small", "vol-third"):
        other_host.delete_volume(name)
    other_host.delete_volume("vol-small")  # idempotent
    assert backend.capacity().free == 4 * GiB
    with pytest.raises(exception.BackendVolumeNotFound):
        backend.get_volume("vol-small")
    assert iscsi_utils.decode_record(_claim_blocks(target)[2 * 512 : 3 * 512]) is None


def test_no_lun_big_enough_is_no_space_and_claims_nothing(backend, target):
    with pytest.raises(exception.NoSpace) as caught:
        backend.create_volume("vol-huge", 3)
    assert "largest of %d bytes" % (2 * GiB) in str(caught.value)
    assert backend.capacity().free == 4 * GiB
    assert not _claim_blocks(target)[512:].strip(b"\0")


def test_delete_zeroes_the_first_mib_for_the_next_owner(backend, target):
    volume = backend.create_volume("vol-old", 1)
    number = int(volume.location.rsplit("/", 1)[1])
    with _session(backend, target) as s:
        s.write(number, 0, b"\xab" * (2 * 1024**2), 512)  # an old owner's data

    backend.delete_volume("vol-old")

    with open(target.luns[number], "rb") as f:
        assert f.read(1024**2) == bytes(1024**2)
        assert f.read(512) == b"\xab" * 512  # only the first MiB is wiped


def test_a_claim_lun_holding_other_data_is_refused(backend, target):
    with open(target.luns[CLAIM_LUN], "r+b") as f:
        f.write(b"a guest's boot sector")
    with pytest.raises(cd_exception.InvalidConfig, match="not a claim table"):
        backend.create_volume("vol-x", 1)
    with open(target.luns[CLAIM_LUN], "rb") as f:
        assert f.read(21) == b"a guest's boot sector"


def test_a_crashed_claim_is_not_a_volume_and_is_resumed(backend, target):
    lun = iscsi_backend.Lun(target.iqn, 3, GiB)
    with backend._pool(lock=True) as pool:  # what a crash after the claim leaves
        pool.write_record(lun, {"volume": "vol-crashed", "state": "creating"})
    with pytest.raises(exception.BackendVolumeNotFound):
        backend.get_volume("vol-crashed")
    assert backend.create_volume("vol-crashed", 1).location == target.iqn + "/3"
    assert backend.get_volume("vol-crashed").location == target.iqn + "/3"
    backend.delete_volume("vol-crashed")


def test_waits_for_another_hosts_claim_and_times_out(make_backend, target):
    backend = make_backend()
    backend.capacity()  # the claim LUN exists
    with _session(backend, target) as other_host:
        assert other_host.reserve(CLAIM_LUN)
        releaser = threading.Timer(0.3, other_host.release, args=(CLAIM_LUN,))
        releaser.start()
        try:
            assert backend.create_volume("vol-wait", 1).location == target.iqn + "/2"
        finally:
            releaser.join()
        assert other_host.reserve(CLAIM_LUN)
        impatient = make_backend(lock_timeout=1)
        for call in (lambda: impatient.create_volume("vol-x", 1), impatient.capacity):
            with pytest.raises(exception.BackendUnavailable, match="reserved by another session"):
                call()
    # The other host's session ended: its reservation went with it.
    backend.delete_volume("vol-wait")
    assert backend.capacity().free == 4 * GiB


def test_a_dead_portal_is_backend_unavailable(make_backend):
    with pytest.raises(exception.BackendUnavailable, match="could not log in"):
        make_backend(portal="127.0.0.1:1").capacity()


# --- images ---------------------------------------------------------------


def test_create_from_image_writes_it_into_the_lun(backend, image, target):
    volume = backend.create_from_image("vol-img", image, 1, linked=True)

    assert volume.location == target.iqn + "/2"
    assert backend.create_from_image("vol-img", image, 1) == volume
    with _session(backend, target) as s:
        for offset, byte, length in IMAGE_PATTERNS:
            assert s.read(2, offset // 512, length, 512) == bytes([byte]) * length
        assert s.read(2, 1024**2 // 512, 4096, 512) == bytes(4096)
    assert not [p for p in os.listdir("/tmp") if p.startswith("cd-iscsi-")]
    backend.delete_volume("vol-img")


def test_a_failed_image_write_leaves_nothing(backend, target, image, monkeypatch):
    real_run = iscsi_backend.qemu_img.run

    def convert_then_fail(*args: str, **kwargs: Any) -> str:
        out = real_run(*args, **kwargs)
        if args[0] == "convert":  # the image is in the LUN; then qemu-img "fails"
            raise cd_exception.StorageError(operation="qemu-img", volume="x", reason="injected")
        return out

    monkeypatch.setattr(iscsi_backend.qemu_img, "run", convert_then_fail)
    with pytest.raises(cd_exception.StorageError, match="injected"):
        backend.create_from_image("vol-broken", image, 1)

    assert backend.capacity().free == 4 * GiB
    with pytest.raises(exception.BackendVolumeNotFound):
        backend.get_volume("vol-broken")
    with open(target.luns[2], "rb") as f:  # the LUN it had claimed: wiped again
        assert f.read(1024**2) == bytes(1024**2)


# --- CHAP -----------------------------------------------------------------


def test_wrong_chap_password_is_a_clear_error_and_makes_nothing(make_backend, target, image):
    good = make_backend()
    good.create_volume("vol-keep", 1)
    before = _claim_blocks(target)
    bad = make_backend(password="not-the-password")

    for call in (
        lambda: bad.create_volume("vol-bad", 1),
        lambda: bad.create_from_image("vol-bad", image, 1),
        bad.capacity,
        lambda: bad.delete_volume("vol-keep"),
    ):
        with pytest.raises(exception.AuthenticationFailed) as caught:
            call()
        assert caught.value.code == "storage_authentication_failed"
        assert "CHAP" in str(caught.value) and target.username in str(caught.value)

    assert _claim_blocks(target) == before
    assert good.get_volume("vol-keep").location == target.iqn + "/2"
    assert "Session" not in target.connections()  # every failed login was closed
    good.delete_volume("vol-keep")


def test_the_password_is_in_no_log_argument_or_xml(make_backend, target, image, caplog):
    caplog.set_level(logging.DEBUG)
    backend = make_backend()
    seen: list[str] = []
    stop = threading.Event()

    def watch_ps() -> None:
        while not stop.is_set():
            out = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True)
            seen.append(out.stdout)
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    with contextlib.suppress(OSError):
                        with open("/proc/%s/environ" % pid, "rb") as f:
                            env = f.read()
                        with open("/proc/%s/cmdline" % pid, "rb") as f:
                            if b"qemu-img" in f.read():
                                seen.append(env.decode(errors="replace"))

    watcher = threading.Thread(target=watch_ps)
    watcher.start()
    try:
        volume = backend.create_from_image("vol-secret", image, 1)
        disk = backend.disk_config(volume)
        disk.target_dev = "vda"
        xml = disk.to_string()
        backend.delete_volume("vol-secret")
    finally:
        stop.set()
        watcher.join()
    with pytest.raises(exception.AuthenticationFailed) as caught:
        make_backend(password="wrong-" + target.password).capacity()

    assert any("qemu-img convert" in snapshot for snapshot in seen)  # the watcher saw it run
    assert "Created volume vol-secret" in caplog.text
    for text in [caplog.text, xml, str(caught.value), repr(backend.settings), *seen]:
        assert target.password not in text


# --- a real guest ---------------------------------------------------------


def test_guest_runs_on_the_lun_with_chap(backend, image, target, libvirt_conn, tmp_path):
    volume = backend.create_from_image("vol-guest", image, 1)
    disk = backend.disk_config(volume)
    disk.target_dev, disk.target_bus = "vda", "virtio"
    assert (disk.source_protocol, disk.source_name) == ("iscsi", volume.location)
    assert disk.source_initiator_iqn == target.initiator
    assert (disk.auth_secret_type, disk.auth_secret_uuid) == (
        "iscsi",
        backend.opts.chap_secret_uuid,
    )
    dom_xml = lvxml.Domain(
        type="qemu",
        name="cd-iscsi-test-%s" % uuid.uuid4().hex[:8],
        memory_kib=65536,
        vcpus=1,
        os=lvxml.OS(type="hvm", arch="x86_64", machine="pc"),
        devices=[disk, lvxml.MemBalloon(model="none")],
    ).to_string()
    assert target.password not in dom_xml
    if shutil.which("virt-xml-validate"):
        (tmp_path / "domain.xml").write_text(dom_xml)
        subprocess.run(["virt-xml-validate", str(tmp_path / "domain.xml"), "domain"], check=True)

    dom = libvirt_conn.createXML(dom_xml, 0)
    try:
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert target.initiator in target.connections()  # QEMU logged in itself
    finally:
        dom.destroy()
    backend.delete_volume("vol-guest")
