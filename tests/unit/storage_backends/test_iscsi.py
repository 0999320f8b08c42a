"""The iscsi backend without a target: options, start-up checks, claim logic, XML, secrets.

The target is faked in memory (:class:`FakeTarget`: LUNs as byte arrays, a
reservation flag) only to drive the claim logic through every branch; the
real thing, libiscsi and tgtd included, is in
tests/functional/storage/test_iscsi_backend.py.
"""

from __future__ import annotations

import os
import stat
import sys
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver import exception as cd_exception
from compute_driver.objects import ImageSpec
from storage_backends import base, exception, iscsi_utils
from storage_backends import iscsi as iscsi_backend

GiB = 1024**3
BLOCK = 512
SECRET_UUID = "5c4b3a29-1807-46f5-a4b3-c2d1e0f9a8b7"
T1 = "iqn.2026-01.org.example:t1"
T2 = "iqn.2026-01.org.example:t2"
INITIATOR = "iqn.2026-01.org.example:host1"
PASSWORD = "s3cret-chap-pass"


class FakeTarget:
    """LUNs in memory: number -> bytearray (sizes are faked, contents kept small)."""

    def __init__(self, sizes: dict[int, int], claim_size: int = 1024**2) -> None:
        self.sizes = {0: 0, 1: claim_size, **sizes}
        self.data: dict[int, bytearray] = {n: bytearray() for n in self.sizes}
        self.reserved_by: object | None = None
        self.logins = 0

    def read(self, lun: int, offset: int, length: int) -> bytes:
        return bytes(self.data[lun][offset : offset + length].ljust(length, b"\0"))

    def write(self, lun: int, offset: int, data: bytes) -> None:
        buf = self.data[lun]
        if len(buf) < offset + len(data):
            buf.extend(bytes(offset + len(data) - len(buf)))
        buf[offset : offset + len(data)] = data


class FakeSession:
    """Stands in for iscsi_utils.Session; same methods, over a FakeTarget."""

    targets: dict[str, FakeTarget] = {}
    password = PASSWORD

    def __init__(self, settings: iscsi_utils.Settings, target: str) -> None:
        if settings.username and settings.password != self.password:
            raise iscsi_utils._login_error(settings, target, "Authentication failure(513)")
        self.settings, self.target, self.t = settings, target, self.targets[target]
        self.t.logins += 1

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.t.reserved_by is self:
            self.t.reserved_by = None

    def report_luns(self) -> list[int]:
        return sorted(self.t.sizes)

    def read_capacity(self, lun: int) -> tuple[int, int] | None:
        return (self.t.sizes[lun], BLOCK) if self.t.sizes[lun] else None

    def read(self, lun: int, lba: int, length: int, block: int) -> bytes:
        return self.t.read(lun, lba * block, length)

    def write(self, lun: int, lba: int, data: bytes, block: int) -> None:
        assert len(data) % block == 0
        self.t.write(lun, lba * block, data)

    def reserve(self, lun: int) -> bool:
        assert lun == 1
        if self.t.reserved_by not in (None, self):
            return False
        self.t.reserved_by = self
        return True

    def release(self, lun: int) -> None:
        self.t.reserved_by = None


@pytest.fixture
def targets(monkeypatch) -> dict[str, FakeTarget]:
    found = {
        T1: FakeTarget({2: 1 * GiB, 3: 2 * GiB, 4: 1 * GiB}),
        T2: FakeTarget({2: 1 * GiB, 5: 5 * GiB}),
    }
    monkeypatch.setattr(FakeSession, "targets", found)
    monkeypatch.setattr(iscsi_utils, "Session", FakeSession)
    monkeypatch.setattr(iscsi_utils, "libiscsi", lambda: None)
    return found


@pytest.fixture
def secrets(monkeypatch) -> dict[str, Any]:
    """A fake ``libvirt`` module with one secret store."""
    store: dict[str, Any] = {}

    class LibvirtError(Exception):
        def get_error_message(self) -> str:
            return str(self)

    class Secret:
        def __init__(self, xml: str, private: bool = True) -> None:
            self.xml, self.private = xml, private
            self.val: bytes | None = None

        def usageType(self) -> int:
            return 3 if "type='iscsi'" in self.xml else 1

        def setValue(self, value: bytes) -> None:
            self.val = value

        def value(self) -> bytes:
            if self.private:
                raise LibvirtError("secret is private")
            return self.val or b""

    class Conn:
        def secretLookupByUUIDString(self, u: str) -> Secret:
            if u not in store:
                raise LibvirtError("no secret " + u)
            return store[u]

        def secretDefineXML(self, xml: str) -> Secret:
            store[SECRET_UUID] = Secret(xml)
            return store[SECRET_UUID]

        def close(self) -> None:
            pass

    fake = types.SimpleNamespace(
        open=lambda uri: Conn(),
        libvirtError=LibvirtError,
        VIR_SECRET_USAGE_TYPE_ISCSI=3,
        Secret=Secret,
    )
    monkeypatch.setitem(sys.modules, "libvirt", fake)
    store["_module"] = fake
    return store


def _password_file(tmp_path: Path, text: str = PASSWORD + "\n", mode: int = 0o600) -> str:
    path = tmp_path / ("pw-" + uuid.uuid4().hex[:6])
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def _conf(**options: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf([], project="compute-driver", default_config_files=[])
    # NOTE: a new OptGroup each time: oslo.config shares a registered group's
    # option table, overrides included, between ConfigOpts objects.
    conf.register_group(cfg.OptGroup("iscsi"))
    conf.register_opts(iscsi_backend.OPTS, group="iscsi")
    for name, value in options.items():
        conf.set_override(name, value, group="iscsi")
    return conf


@pytest.fixture
def make(targets, secrets, tmp_path):
    conn = secrets["_module"].open("qemu:///lent")  # what the agent lends

    def make(**options: Any) -> iscsi_backend.IscsiStorageBackend:
        values: dict[str, Any] = {
            "portal": "192.0.2.10:3260",
            "targets": [T1, T2],
            "initiator_iqn": INITIATOR,
            "chap_username": "cduser",
            "chap_secret_uuid": SECRET_UUID,
            "chap_password_file": _password_file(tmp_path),
            "lock_timeout": 1,
        }
        values.update(options)
        # NOTE: the backend is lent the agent's libvirt connection; it opens none.
        services = base.Services(hypervisor=lambda: conn)
        return iscsi_backend.IscsiStorageBackend(_conf(**values), services=services)

    return make


# --- options and start-up -------------------------------------------------


def test_options_and_defaults():
    (group, opts) = next(iter(iscsi_backend.list_opts().items()))
    assert group.name == "iscsi" == iscsi_backend.IscsiStorageBackend.name
    assert [o.name for o in opts] == [
        "portal",
        "targets",
        "initiator_iqn",
        "claim_lun",
        "chap_username",
        "chap_secret_uuid",
        "chap_password_file",
        "connect_timeout",
        "op_timeout",
        "lock_timeout",
        "image_write_timeout",
    ]
    conf = _conf()
    assert (conf.iscsi.claim_lun, conf.iscsi.connect_timeout, conf.iscsi.op_timeout) == (1, 10, 30)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("portal", "127.0.0.1"),
        ("portal", "a b:3260"),
        ("initiator_iqn", "iqn.2026-01.x:a,b"),
        ("targets", ["iqn.2026-01.x:t/1"]),
        ("chap_secret_uuid", "not-a-uuid"),
    ],
)
def test_malformed_options_are_refused(option, value):
    with pytest.raises(ValueError):
        _conf(**{option: value})


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("portal", "portal is not set"),
        ("initiator_iqn", "initiator_iqn is not set"),
        ("targets", "targets is empty"),
        ("chap_secret_uuid", "chap_secret_uuid is not"),
    ],
)
def test_required_options(make, missing, message):
    with pytest.raises(cd_exception.InvalidConfig, match=message):
        make(**{missing: [] if missing == "targets" else None})


def test_password_file_must_be_private_and_not_empty(make, tmp_path):
    with pytest.raises(cd_exception.InvalidConfig, match="make it 0600"):
        make(chap_password_file=_password_file(tmp_path, mode=0o644))
    with pytest.raises(cd_exception.InvalidConfig, match="is empty"):
        make(chap_password_file=_password_file(tmp_path, text="\n"))
    with pytest.raises(cd_exception.InvalidConfig, match="No such file"):
        make(chap_password_file=str(tmp_path / "nope"))


def test_the_backend_opens_no_libvirt_connection_of_its_own(make, secrets, monkeypatch):
    monkeypatch.setattr(secrets["_module"], "open", lambda uri: pytest.fail("opened " + uri))
    make()
    assert secrets[SECRET_UUID].val == PASSWORD.encode()  # defined on the lent connection


def test_chap_without_a_lent_libvirt_connection_is_refused(secrets, tmp_path):
    conf = _conf(
        portal="192.0.2.10:3260",
        targets=[T1],
        initiator_iqn=INITIATOR,
        chap_username="cduser",
        chap_secret_uuid=SECRET_UUID,
        chap_password_file=_password_file(tmp_path),
    )
    with pytest.raises(cd_exception.InvalidConfig, match="no libvirt connection"):
        iscsi_backend.IscsiStorageBackend(conf)


def test_password_file_defines_the_libvirt_secret(make, secrets):
    backend = make()
    secret = secrets[SECRET_UUID]
    assert secret.val == PASSWORD.encode()
    assert "private='yes'" in secret.xml and "type='iscsi'" in secret.xml
    assert PASSWORD not in secret.xml
    assert backend.settings.password == PASSWORD
    assert PASSWORD not in repr(backend.settings)


def test_password_from_the_libvirt_secret(make, secrets):
    with pytest.raises(cd_exception.InvalidConfig, match="no such libvirt secret"):
        make(chap_password_file=None)
    secret = secrets["_module"].Secret("<secret><usage type='iscsi'/></secret>", private=True)
    secret.val = PASSWORD.encode()
    secrets[SECRET_UUID] = secret
    with pytest.raises(cd_exception.InvalidConfig, match="set \\[iscsi\\] chap_password_file"):
        make(chap_password_file=None)
    secret.private = False
    assert make(chap_password_file=None).settings.password == PASSWORD
    secrets[SECRET_UUID] = secrets["_module"].Secret("<usage type='ceph'/>", private=False)
    with pytest.raises(cd_exception.InvalidConfig, match="usage type 'iscsi'"):
        make(chap_password_file=None)


def test_no_chap(make, secrets):
    backend = make(chap_username=None, chap_secret_uuid=None, chap_password_file=None)
    assert backend.settings.password is None and SECRET_UUID not in secrets
    disk = backend.disk_config(backend.create_volume("vol-a", 1))
    assert disk.auth_username is None and disk.auth_secret_uuid is None


def test_describe_and_unsupported_abilities(make):
    backend = make()
    assert backend.describe().to_wire() == {
        "name": "iscsi",
        "shared": True,
        "formats": ["raw"],
        "linked_clone": False,
        "snapshots": False,
        "resize": False,
        "image_cache": False,
        "export": False,
    }
    for call in (
        lambda: backend.resize_volume("vol-a", 2),
        lambda: backend.create_snapshot("vol-a", "s"),
        lambda: backend.list_snapshots("vol-a"),
        lambda: backend.export_volume("vol-a", "/nonexistent/export.qcow2"),
        lambda: backend.revert_to_snapshot("vol-a", "s"),
        lambda: backend.delete_snapshot("vol-a", "s"),
    ):
        with pytest.raises(exception.Unsupported):
            call()


# --- claims ---------------------------------------------------------------


def test_smallest_fitting_lun_in_target_order(make, targets):
    backend = make()
    assert backend.capacity() == base.Capacity(total=10 * GiB, free=10 * GiB, provisioned=0)

    got = [
        backend.create_volume("vol-%d" % n, size).location for n, size in enumerate([1, 1, 1, 2, 1])
    ]

    assert got == [T1 + "/2", T1 + "/4", T2 + "/2", T1 + "/3", T2 + "/5"]
    assert backend.capacity() == base.Capacity(total=10 * GiB, free=0, provisioned=10 * GiB)
    assert backend.get_volume("vol-4") == base.Volume(
        id="vol-4", backend="iscsi", size_gb=5, format="raw", location=T2 + "/5"
    )
    # Block n of the claim LUN (LUN 1) records LUN n; block 0 names the table.
    table = targets[T1].data[1]
    assert table.startswith(iscsi_utils.HEADER_MAGIC)
    record = iscsi_utils.decode_record(bytes(table[3 * BLOCK : 4 * BLOCK]))
    assert record is not None and record["volume"] == "vol-3" and record["state"] == "ready"
    assert targets[T1].reserved_by is None and targets[T2].reserved_by is None


def test_create_is_idempotent(make):
    backend = make()
    first = backend.create_volume("vol-a", 1)
    assert backend.create_volume("vol-a", 2) == first  # an existing volume is returned as it is
    assert backend.capacity().free == 9 * GiB


def test_no_space_names_the_largest_free_lun(make):
    backend = make()
    with pytest.raises(exception.NoSpace, match="largest of %d bytes" % (5 * GiB)):
        backend.create_volume("vol-a", 6)
    assert backend.capacity().free == 10 * GiB


def test_new_volume_starts_with_a_zeroed_first_mib(make, targets):
    targets[T1].write(2, 0, b"\xee" * (2 * 1024**2))
    make().create_volume("vol-a", 1)
    assert targets[T1].read(2, 0, 1024**2) == bytes(1024**2)
    assert targets[T1].read(2, 1024**2, 1) == b"\xee"


def test_delete_wipes_and_releases(make, targets):
    backend = make()
    backend.create_volume("vol-a", 1)
    targets[T1].write(2, 0, b"\xee" * 4096)
    backend.delete_volume("vol-a")
    backend.delete_volume("vol-a")
    assert targets[T1].read(2, 0, 4096) == bytes(4096)
    assert not targets[T1].data[1][2 * BLOCK : 3 * BLOCK].strip(b"\0")
    with pytest.raises(exception.BackendVolumeNotFound):
        backend.get_volume("vol-a")


def test_a_creating_record_is_no_volume_yet(make, targets):
    targets[T1].write(1, 0, iscsi_utils.header_block(BLOCK))
    record = {"volume": "vol-a", "state": "creating"}
    targets[T1].write(1, 2 * BLOCK, iscsi_utils.encode_record(record, BLOCK))
    backend = make()
    with pytest.raises(exception.BackendVolumeNotFound):
        backend.get_volume("vol-a")
    assert backend.capacity().free == 9 * GiB
    assert backend.create_volume("vol-a", 1).location == T1 + "/2"  # resumed, not a 2nd LUN
    assert backend.capacity().free == 9 * GiB


def test_a_corrupt_record_leaves_its_lun_alone(make, targets, caplog):
    targets[T1].write(1, 0, iscsi_utils.header_block(BLOCK))
    targets[T1].write(1, 2 * BLOCK, b"garbage")
    backend = make()
    assert backend.create_volume("vol-a", 1).location == T1 + "/4"
    assert "Claim record of LUN %s/2 is unreadable" % T1 in caplog.text
    assert backend.capacity().free == 8 * GiB


def test_claim_lun_with_foreign_data_is_refused(make, targets):
    targets[T2].write(1, 0, b"\xeb\x63\x90 a boot sector")
    with pytest.raises(cd_exception.InvalidConfig, match="not a claim table"):
        make().create_volume("vol-a", 1)
    assert not targets[T1].data[1][BLOCK:].strip(b"\0")  # nothing claimed anywhere


def test_missing_claim_lun(make):
    with pytest.raises(cd_exception.InvalidConfig, match="has no disk LUN 7"):
        make(claim_lun=7).capacity()


def test_luns_past_the_claim_table_are_not_used(make, targets, caplog):
    targets[T2] = FakeTarget({2: GiB, 5: 5 * GiB}, claim_size=5 * BLOCK)
    backend = make()
    assert backend.capacity().total == 5 * GiB
    assert "LUN %s/5 is not used: claim LUN 1 has no block 5" % T2 in caplog.text


def test_a_held_claim_lun_times_out(make, targets):
    targets[T2].reserved_by = object()  # another host, mid-claim
    with pytest.raises(exception.BackendUnavailable, match="stayed reserved"):
        make().create_volume("vol-a", 1)
    assert targets[T1].reserved_by is None  # what it had taken is given back
    assert not targets[T1].data[1][BLOCK:].strip(b"\0")


def test_wrong_password_is_authentication_failed(make, monkeypatch):
    backend = make()
    monkeypatch.setattr(FakeSession, "password", "other")
    with pytest.raises(exception.AuthenticationFailed) as caught:
        backend.create_volume("vol-a", 1)
    assert caught.value.code == "storage_authentication_failed"
    assert isinstance(caught.value, exception.PermissionDenied)


def test_unsafe_volume_names(make):
    backend = make()
    for call in (backend.create_volume, lambda n, s: backend.get_volume(n)):
        with pytest.raises(exception.InvalidVolumeName):
            call("../x", 1)


# --- images ---------------------------------------------------------------


def _image(tmp_path: Path, fmt: str = "raw") -> ImageSpec:
    path = tmp_path / ("img." + fmt)
    path.write_bytes(b"\x11" * 4096)
    return ImageSpec(uuid=str(uuid.uuid4()), name="i", disk_format=fmt, path=str(path))


def test_create_from_image_runs_qemu_img_with_the_password_in_a_file(make, tmp_path, monkeypatch):
    calls: list[tuple[str, ...]] = []

    def fake_run(*args: str, timeout: float = 0) -> str:
        calls.append(args)
        if args[0] == "info":
            return '{"virtual-size": 4096, "format": "raw"}'
        secret = [a for a in args if a.startswith("secret,")][0]
        path = dict(kv.split("=", 1) for kv in secret.split(",")[1:])["file"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as f:
            assert f.read() == PASSWORD
        calls.append(("secret-file", path))
        return ""

    monkeypatch.setattr(iscsi_backend.qemu_img, "run", fake_run)
    backend = make()
    volume = backend.create_from_image("vol-a", _image(tmp_path), 0, linked=True)

    assert volume.location == T1 + "/2"
    convert = calls[1]
    assert convert[:5] == ("convert", "-q", "-n", "-f", "raw")
    opts = convert[-1]
    assert convert[-2] == "--target-image-opts"
    assert "target=%s,lun=2,initiator-name=%s" % (T1, INITIATOR) in opts
    assert "user=cduser,password-secret=iscsi-chap" in opts
    assert not any(PASSWORD in a for a in convert)
    assert not os.path.exists(calls[2][1])  # the password file is gone


def test_create_from_image_refuses_odd_images(make, tmp_path, monkeypatch):
    backend = make()
    with pytest.raises(cd_exception.InvalidImage, match="format 'vmdk'"):
        backend.create_from_image("vol-a", _image(tmp_path, "vmdk"), 1)
    monkeypatch.setattr(
        iscsi_backend.qemu_img,
        "run",
        lambda *a, **k: '{"virtual-size": 1, "backing-filename": "/etc/shadow"}',
    )
    with pytest.raises(cd_exception.InvalidImage, match="backing or data file"):
        backend.create_from_image("vol-a", _image(tmp_path, "qcow2"), 1)
    assert backend.capacity().free == 10 * GiB


def test_a_failed_write_releases_the_lun(make, tmp_path, monkeypatch):
    def fake_run(*args: str, timeout: float = 0) -> str:
        if args[0] == "info":
            return '{"virtual-size": 4096}'
        raise cd_exception.StorageError(operation="qemu-img convert", volume="x", reason="EIO")

    monkeypatch.setattr(iscsi_backend.qemu_img, "run", fake_run)
    backend = make()
    with pytest.raises(cd_exception.StorageError, match="qemu-img into LUN .*/2: EIO"):
        backend.create_from_image("vol-a", _image(tmp_path), 1)
    assert backend.capacity().free == 10 * GiB


# --- XML, records, errors -------------------------------------------------


def test_disk_config(make):
    backend = make()
    volume = backend.create_volume("vol-a", 1)
    disk = backend.disk_config(volume)
    disk.target_dev = "vda"
    xml = disk.to_string()
    assert '<source protocol="iscsi" name="%s/2">' % T1 in xml
    assert '<host name="192.0.2.10" port="3260"/>' in xml
    assert '<iqn name="%s"/>' % INITIATOR in xml
    assert '<auth username="cduser">' in xml
    assert '<secret type="iscsi" uuid="%s"/>' % SECRET_UUID in xml
    assert '<driver name="qemu" type="raw" cache="none"/>' in xml
    assert PASSWORD not in xml


def test_ipv6_portal(make):
    backend = make(portal="[2001:db8::1]:3261")
    disk = backend.disk_config(backend.create_volume("vol-a", 1))
    assert (disk.hosts[0].name, disk.hosts[0].port) == ("2001:db8::1", 3261)


def test_records_round_trip_and_detect_damage():
    record = {"volume": "vol-a", "state": "ready", "size": GiB}
    block = iscsi_utils.encode_record(record, BLOCK)
    assert len(block) == BLOCK
    assert iscsi_utils.decode_record(block) == record
    assert iscsi_utils.decode_record(bytes(BLOCK)) is None
    torn = block[:20] + bytes(BLOCK - 20)
    flipped = block.replace(b"vol-a", b"vol-b")
    for bad in (torn, flipped, b"x" * BLOCK, iscsi_utils.header_block(BLOCK)):
        with pytest.raises(iscsi_utils.CorruptRecord):
            iscsi_utils.decode_record(bad)
    with pytest.raises(ValueError):
        iscsi_utils.encode_record({"volume": "x" * 600}, BLOCK)
    assert iscsi_utils.is_header(iscsi_utils.header_block(4096))
    assert not iscsi_utils.is_header(iscsi_utils.HEADER_MAGIC + b"more".ljust(BLOCK, b"\0"))


def test_image_opts_without_chap():
    settings = iscsi_utils.Settings("iscsi", "h:1", INITIATOR, None, None, 5, 7)
    assert iscsi_utils.image_opts(settings, T1, 3, None) == (
        "driver=iscsi,transport=tcp,portal=h:1,target=%s,lun=3,initiator-name=%s,timeout=7"
        % (T1, INITIATOR)
    )


@pytest.mark.parametrize(
    ("why", "error"),
    [
        ("Failed to log in to target. Status: Authentication failure(513)", "AuthenticationFailed"),
        ("Failed to log in to target. Status: Target not found(515)", "PermissionDenied"),
        ("command timed out", "BackendUnavailable"),
    ],
)
def test_login_errors(why, error):
    settings = iscsi_utils.Settings("iscsi", "h:1", INITIATOR, "u", PASSWORD, 5, 7)
    found = iscsi_utils._login_error(settings, T1, why)
    assert type(found).__name__ == error
    assert PASSWORD not in str(found)


def test_secret_file_is_private_and_removed():
    with iscsi_utils.secret_file(PASSWORD) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as f:
            assert f.read() == PASSWORD
    assert not os.path.exists(path)
