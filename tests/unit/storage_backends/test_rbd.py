"""The rbd backend without a cluster: options, start-up checks, error mapping, helpers.

Behaviour against a real Ceph is in tests/functional/storage/test_rbd.py. Here
the bindings are faked only to reach error paths a healthy cluster never takes.
"""

from __future__ import annotations

import errno
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver import exception as cd_exception
from compute_driver.objects import ImageSpec
from storage_backends import exception, rbd_utils
from storage_backends import rbd as rbd_backend

rados = pytest.importorskip("rados", reason="Debian's python3-rados is not installed")
rbd = pytest.importorskip("rbd", reason="Debian's python3-rbd is not installed")

SECRET_UUID = "5c4b3a29-1807-46f5-a4b3-c2d1e0f9a8b7"


def _conf(tmp_path: Path, **options: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.StrOpt("state_path", default=str(tmp_path)))
    # NOTE: a new OptGroup each time: oslo.config shares a registered group's
    # option table, overrides included, between ConfigOpts objects.
    conf.register_group(cfg.OptGroup("rbd"))
    conf.register_opts(rbd_backend.OPTS, group="rbd")
    conf([], project="compute-driver", default_config_files=[])
    for name, value in options.items():
        conf.set_override(name, value, group="rbd")
    return conf


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text("[global]\nmon host = 127.0.0.1:1\n")
    keyring = tmp_path / "client.compute.keyring"
    keyring.write_text("[client.compute]\n\tkey = AQAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAA==\n")
    return {"ceph_conf": str(ceph_conf), "keyring": str(keyring)}


@pytest.fixture
def make(tmp_path: Path, files: dict[str, str]):
    def make(**options: Any) -> rbd_backend.RbdStorageBackend:
        values: dict[str, Any] = dict(files, secret_uuid=SECRET_UUID)
        values.update(options)
        return rbd_backend.RbdStorageBackend(_conf(tmp_path, **values))

    return make


# --- options --------------------------------------------------------------


def test_options_and_defaults(tmp_path):
    (group, opts) = next(iter(rbd_backend.list_opts().items()))
    assert group.name == "rbd" == rbd_backend.RbdStorageBackend.name
    assert [o.name for o in opts] == [
        "pool",
        "ceph_conf",
        "user",
        "keyring",
        "secret_uuid",
        "connect_timeout",
        "op_timeout",
        "max_clone_depth",
        "image_conversion_dir",
    ]
    conf = _conf(tmp_path)
    assert conf.rbd.pool == "rbd"
    assert conf.rbd.ceph_conf == "/etc/ceph/ceph.conf"
    assert conf.rbd.user == "compute"
    assert conf.rbd.keyring is None and conf.rbd.secret_uuid is None
    assert (conf.rbd.connect_timeout, conf.rbd.op_timeout, conf.rbd.max_clone_depth) == (10, 30, 5)
    assert conf.rbd.image_conversion_dir == str(tmp_path / "rbd-conversion")
    for opt in opts:
        assert opt.help and len(opt.help) > 40, opt.name


@pytest.mark.parametrize(
    "name, bad",
    [
        ("connect_timeout", "0"),
        ("op_timeout", "0"),
        ("max_clone_depth", "-1"),
        ("secret_uuid", "not-a-uuid"),
    ],
)
def test_bad_option_values_are_refused(tmp_path, name, bad):
    path = tmp_path / "c.conf"
    path.write_text("[rbd]\n%s = %s\n" % (name, bad))
    conf = cfg.ConfigOpts()
    conf.register_group(cfg.OptGroup("rbd"))
    conf.register_opts(rbd_backend.OPTS, group="rbd")
    conf(["--config-file", str(path)], project="x", default_config_files=[])
    with pytest.raises(cfg.ConfigFileValueError):
        getattr(conf.rbd, name)


def test_secret_uuid_is_required(make):
    with pytest.raises(cd_exception.InvalidConfig, match="secret_uuid"):
        make(secret_uuid=None)


@pytest.mark.parametrize("option", ["ceph_conf", "keyring"])
def test_unreadable_files_stop_the_backend_at_start(make, tmp_path, option):
    with pytest.raises(cd_exception.InvalidConfig, match=option):
        make(**{option: str(tmp_path / "missing")})


def test_no_keyring_leaves_the_search_to_librados(make):
    backend = make(keyring=None)
    assert "keyring" not in backend.settings.rados_conf()


def test_user_may_be_given_with_the_client_prefix(make):
    assert make(user="client.nova").settings.user == "nova"
    assert make(user="nova").settings.entity == "client.nova"


def test_every_cluster_wait_is_bounded(make):
    conf = make(connect_timeout=7, op_timeout=11, keyring=None).settings.rados_conf()
    assert conf == {
        "client_mount_timeout": "7",
        "rados_mon_op_timeout": "11",
        "rados_osd_op_timeout": "11",
    }


def test_missing_bindings_are_a_config_error(make, monkeypatch):
    monkeypatch.setattr(rbd_utils, "rados", None)
    with pytest.raises(cd_exception.InvalidConfig, match="python3-rados"):
        make()


def test_describe(make):
    described = make().describe()
    assert described.shared is True and described.formats == ("raw",)
    assert described.linked_clone and described.snapshots and described.resize
    assert not described.export


# --- names (checked before any cluster call) ------------------------------


@pytest.mark.parametrize("name", ["image-1234", "../etc", "a b", "a@snap", "x" * 200, ""])
def test_unsafe_or_reserved_volume_names(make, name):
    backend = make()
    image = ImageSpec(uuid=str(uuid.uuid4()), name="i", disk_format="raw", path="/nonexistent")
    for call in (
        lambda: backend.create_from_image(name, image, 1),
        lambda: backend.delete_volume(name),
        lambda: backend.resize_volume(name, 1),
        lambda: backend.create_snapshot(name, "s"),
    ):
        with pytest.raises(exception.InvalidVolumeName):
            call()


def test_unsafe_image_uuid_and_snapshot_name(make):
    backend = make()
    bad = ImageSpec(uuid="../x", name="i", disk_format="raw", path="/nonexistent")
    with pytest.raises(exception.InvalidVolumeName):
        backend.create_from_image("vol", bad, 1)
    with pytest.raises(exception.InvalidVolumeName):
        backend.create_snapshot("vol", "a@b")


# --- error mapping --------------------------------------------------------


def _settings(**kw: Any) -> rbd_utils.ClusterSettings:
    values: dict[str, Any] = dict(
        backend="rbd",
        conffile="/etc/ceph/ceph.conf",
        user="compute",
        keyring="/etc/ceph/ceph.client.compute.keyring",
        pool="volumes",
        connect_timeout=10,
        op_timeout=30,
    )
    values.update(kw)
    return rbd_utils.ClusterSettings(**values)


@pytest.mark.parametrize(
    "error, expected",
    [
        (rbd.PermissionError("denied", errno=errno.EPERM), exception.PermissionDenied),
        (rados.PermissionDeniedError("denied", errno=errno.EACCES), exception.PermissionDenied),
        (rbd.Timeout("slow", errno=errno.ETIMEDOUT), exception.BackendUnavailable),
        (rados.TimedOut("slow", errno=errno.ETIMEDOUT), exception.BackendUnavailable),
        (rbd.ConnectionShutdown("gone", errno=errno.ESHUTDOWN), exception.BackendUnavailable),
        (rbd.NoSpace("full", errno=errno.ENOSPC), exception.NoSpace),
        (rbd.DiskQuotaExceeded("quota", errno=errno.EDQUOT), exception.NoSpace),
        (rbd.ImageBusy("busy", errno=errno.EBUSY), exception.VolumeBusy),
        (rbd.InvalidArgument("bad", errno=errno.EINVAL), cd_exception.StorageError),
    ],
)
def test_cluster_errors_become_typed_errors(error, expected):
    with pytest.raises(expected) as caught:
        with rbd_utils.translated(_settings(), "create", "vol-1"):
            raise error
    assert caught.value.__cause__ is error
    assert "\n" not in caught.value.message


def test_permission_denied_names_user_pool_and_keyring():
    err = rbd_utils.storage_error(
        rbd.PermissionError("denied", errno=errno.EPERM), _settings(), "create", "vol-1"
    )
    assert "client.compute" in err.message and "pool volumes" in err.message
    assert "/etc/ceph/ceph.client.compute.keyring" in err.message
    assert err.code == "storage_permission_denied"


class _FakeRados:
    """A rados.Rados whose connect fails like librados does."""

    made: list[_FakeRados] = []

    def __init__(self, error: BaseException | None, **kwargs: Any) -> None:
        self.error = error
        self.kwargs = kwargs
        self.shut = False
        _FakeRados.made.append(self)

    def connect(self, timeout: int = 0) -> None:
        if self.error is not None:
            raise self.error

    def shutdown(self) -> None:
        self.shut = True


@pytest.mark.parametrize(
    "error, expected, words",
    [
        (rados.TimedOut("timed out", errno=errno.ETIMEDOUT), exception.BackendUnavailable, "10 s"),
        (rados.PermissionDeniedError("no", errno=errno.EACCES), exception.PermissionDenied, "key"),
        (rados.ObjectNotFound("no key", errno=errno.ENOENT), cd_exception.InvalidConfig, "keyring"),
        (rados.Error("weird"), exception.BackendUnavailable, "weird"),
    ],
)
def test_connection_failures(monkeypatch, error, expected, words):
    class FakeModule:
        Error = rados.Error
        ObjectNotFound = rados.ObjectNotFound

        @staticmethod
        def Rados(**kwargs: Any) -> _FakeRados:  # noqa: N802 - mimics rados.Rados
            return _FakeRados(error, **kwargs)

    monkeypatch.setattr(rbd_utils, "rados", FakeModule)
    _FakeRados.made.clear()
    with pytest.raises(expected, match=words):
        with rbd_utils.connected(_settings(), "capacity", "volumes"):
            pass
    (client,) = _FakeRados.made
    assert client.shut
    assert client.kwargs["rados_id"] == "compute"
    assert client.kwargs["conf"]["client_mount_timeout"] == "10"


# --- helpers --------------------------------------------------------------


class _FakeMonClient:
    def __init__(self, answer: dict[str, Any], ret: int = 0) -> None:
        self.answer, self.ret = answer, ret

    def mon_command(self, cmd: str, inbuf: bytes, timeout: int = 0):
        assert json.loads(cmd) == {"prefix": "mon dump", "format": "json"} and timeout == 30
        return self.ret, json.dumps(self.answer).encode(), "" if self.ret == 0 else "denied"


def _mon(addrvec: list[tuple[str, str]], legacy: str = "") -> dict[str, Any]:
    return {
        "public_addrs": {"addrvec": [{"type": t, "addr": a, "nonce": 0} for t, a in addrvec]},
        "addr": legacy,
    }


def test_monitor_addresses_prefer_v1_and_strip_ipv6_brackets():
    answer = {
        "mons": [
            _mon([("v2", "10.0.0.1:3300"), ("v1", "10.0.0.1:6789")]),
            _mon([("v2", "[fd00::2]:3300")]),
            {"addr": "10.0.0.3:6789/0"},
        ]
    }
    assert rbd_utils.monitor_addresses(_FakeMonClient(answer), _settings()) == [
        ("10.0.0.1", 6789),
        ("fd00::2", 3300),
        ("10.0.0.3", 6789),
    ]


def test_monitor_command_refused():
    with pytest.raises(exception.PermissionDenied):
        rbd_utils.monitor_addresses(_FakeMonClient({}, ret=-errno.EACCES), _settings())


class _RecordingImage:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int]] = []
        self.flushed = False

    def write(self, data: bytes, offset: int) -> None:
        self.writes.append((offset, len(data)))

    def flush(self) -> None:
        self.flushed = True


def test_write_file_skips_holes_and_zero_chunks(tmp_path):
    chunk = rbd_utils.CHUNK
    path = tmp_path / "sparse.raw"
    with open(path, "wb") as f:
        f.truncate(64 * chunk + 100)
        f.seek(chunk + 5)
        f.write(b"x")  # data in chunk 1
        f.seek(10 * chunk)
        f.write(bytes(chunk))  # allocated, but zeros: chunk 10
        f.seek(64 * chunk + 10)
        f.write(b"tail")  # the short last chunk
    image = _RecordingImage()

    written = rbd_utils.write_file(image, str(path))

    assert image.writes == [(chunk, chunk), (64 * chunk, 100)]
    assert written == chunk + 100 and image.flushed


def test_only_raw_and_qcow2_images(tmp_path):
    with pytest.raises(cd_exception.InvalidImage, match="vmdk"):
        with rbd_utils.raw_file(str(tmp_path / "x"), "vmdk", str(tmp_path)):
            pass


def test_new_errors_have_stable_codes():
    assert exception.PermissionDenied.code == "storage_permission_denied"
    assert exception.VolumeHasClones.kind == exception.VolumeBusy.kind == "conflict"
    assert exception.InvalidVolumeSize.kind == "invalid"
    assert exception.VolumeSnapshotNotFound.kind == "not_found"


def test_pool_space_from_ceph_df():
    # The shape of `ceph df -f json` on Pacific with a mgr (trimmed).
    df = {
        "stats": {"total_bytes": 3 * 2**40, "total_avail_bytes": 2**40},
        "pools": [
            {"name": "device_health_metrics", "id": 1, "stats": {"stored": 0, "max_avail": 9}},
            {
                "name": "volumes",
                "id": 2,
                "stats": {
                    "stored": 100 * 2**30,
                    "objects": 25600,
                    "bytes_used": 300 * 2**30,
                    "percent_used": 0.1,
                    "max_avail": 700 * 2**30,
                },
            },
        ],
    }
    assert rbd_utils.pool_space(df, "volumes") == (800 * 2**30, 700 * 2**30)
    # No mgr: Ceph lists no pool at all.
    assert rbd_utils.pool_space({"stats": {"total_bytes": 0}, "pools": []}, "volumes") == (0, 0)
