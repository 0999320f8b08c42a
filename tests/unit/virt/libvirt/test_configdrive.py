"""Tests of the NoCloud config drive builder (pycdlib, no subprocess)."""

from __future__ import annotations

import os
import stat

import pytest

from compute_driver.virt.libvirt import configdrive
from compute_driver.virt.libvirt.configdrive import (
    ConfigDriveContents,
    ConfigDriveError,
    NetworkInterfaceConfig,
)

SAMPLE = ConfigDriveContents(
    instance_id="iid-smoke",
    hostname="smoke",
    user_data=b"#!/bin/sh\necho hello from user-data\n",
    public_keys=("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3 user@host",),
    interfaces=(
        NetworkInterfaceConfig(
            mac="52:54:00:AB:CD:01",
            address="10.251.0.21/24",
            gateway="10.251.0.1",
            nameservers=("10.251.0.2",),
        ),
        NetworkInterfaceConfig(
            mac="52:54:00:ab:cd:02", address="fd00::21/64", nameservers=("10.251.0.2", "fd00::2")
        ),
        NetworkInterfaceConfig(mac="52:54:00:ab:cd:03"),
    ),
)

SAMPLE_META_DATA = """\
instance-id: iid-smoke
local-hostname: smoke
public-keys:
- "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3 user@host"
"""

SAMPLE_NETWORK_CONFIG = """\
version: 1
config:
- type: physical
  name: eth0
  mac_address: "52:54:00:ab:cd:01"
  subnets:
  - type: static
    address: "10.251.0.21/24"
    gateway: "10.251.0.1"
- type: physical
  name: eth1
  mac_address: "52:54:00:ab:cd:02"
  subnets:
  - type: static
    address: "fd00::21/64"
- type: physical
  name: eth2
  mac_address: "52:54:00:ab:cd:03"
- type: nameserver
  address:
  - "10.251.0.2"
  - "fd00::2"
"""


def _build(tmp_path, contents=SAMPLE, **kwargs):
    path = str(tmp_path / "config.iso")
    configdrive.build_iso(contents, path, **kwargs)
    return path


def test_round_trip(tmp_path):
    path = _build(tmp_path)
    files = configdrive.read_iso(path)
    assert files == {
        "meta-data": SAMPLE_META_DATA.encode(),
        "user-data": SAMPLE.user_data,
        "network-config": SAMPLE_NETWORK_CONFIG.encode(),
    }
    assert files == configdrive.render_files(SAMPLE)


def test_label_is_cidata(tmp_path):
    path = _build(tmp_path)
    assert configdrive.read_volume_label(path) == "cidata"
    # Independent check of the raw primary volume descriptor (sector 16).
    with open(path, "rb") as f:
        f.seek(16 * 2048)
        pvd = f.read(2048)
    assert pvd[:6] == b"\x01CD001"
    assert pvd[40:72] == b"cidata".ljust(32)


def test_iso_has_joliet_and_rock_ridge(tmp_path):
    import pycdlib

    path = _build(tmp_path)
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        assert iso.has_rock_ridge()
        assert iso.has_joliet()
        names = sorted(
            child.file_identifier().decode("utf-16_be")
            for child in iso.list_children(joliet_path="/")
            if not child.is_dot() and not child.is_dotdot()
        )
        assert names == ["meta-data", "network-config", "user-data"]
    finally:
        iso.close()


def test_yaml_text_exact():
    files = configdrive.render_files(SAMPLE)
    assert files["meta-data"].decode() == SAMPLE_META_DATA
    assert files["network-config"].decode() == SAMPLE_NETWORK_CONFIG


def test_minimal_drive_has_no_network_config(tmp_path):
    path = _build(tmp_path, ConfigDriveContents(instance_id="i-1", hostname="vm1"))
    assert configdrive.read_iso(path) == {
        "meta-data": b"instance-id: i-1\nlocal-hostname: vm1\n",
        "user-data": b"",
    }


def test_yaml_parses_back_as_strings():
    yaml = pytest.importorskip("yaml")
    contents = ConfigDriveContents(
        instance_id="0123",
        hostname="yes",
        interfaces=(NetworkInterfaceConfig(mac="52:54:00:12:34:56", address="10.0.0.5/24"),),
    )
    files = configdrive.render_files(contents)
    meta = yaml.safe_load(files["meta-data"])
    assert meta == {"instance-id": "0123", "local-hostname": "yes"}
    net = yaml.safe_load(files["network-config"])
    # Unquoted, YAML 1.1 would read this MAC as a base-60 integer.
    assert net["config"][0]["mac_address"] == "52:54:00:12:34:56"
    assert yaml.safe_load(configdrive.render_network_config(SAMPLE.interfaces)) == {
        "version": 1,
        "config": [
            {
                "type": "physical",
                "name": "eth0",
                "mac_address": "52:54:00:ab:cd:01",
                "subnets": [
                    {"type": "static", "address": "10.251.0.21/24", "gateway": "10.251.0.1"}
                ],
            },
            {
                "type": "physical",
                "name": "eth1",
                "mac_address": "52:54:00:ab:cd:02",
                "subnets": [{"type": "static", "address": "fd00::21/64"}],
            },
            {"type": "physical", "name": "eth2", "mac_address": "52:54:00:ab:cd:03"},
            {"type": "nameserver", "address": ["10.251.0.2", "fd00::2"]},
        ],
    }


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "iid-1",
        "yes",
        "No",
        "null",
        "~",
        "0123",
        "1.5",
        "0x1f",
        "12:30",
        "a: b",
        "- x",
        "#c",
        "with space",
        'q"uote',
        "back\\slash",
        "new\nline",
        "tab\t",
        "\x01",
        "caf\u00e9",
        "\u2028",
        "",
    ],
)
def test_yaml_quoting_round_trips(value):
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load("k: %s\n" % configdrive._yaml_str(value)) == {"k": value}


def test_instance_id_is_quoted_when_needed():
    files = configdrive.render_files(ConfigDriveContents(instance_id='a "b": c', hostname="h"))
    assert files["meta-data"] == b'instance-id: "a \\"b\\": c"\nlocal-hostname: h\n'


def test_image_is_padded_for_small_label_readers(tmp_path):
    # busybox's volume_id (findfs LABEL=cidata) reads the first 0x11000 bytes
    # of a device and finds nothing on a shorter one.
    path = _build(tmp_path, ConfigDriveContents(instance_id="i", hostname="h"))
    size = os.path.getsize(path)
    assert size >= 0x11000
    assert size % 2048 == 0
    with open(path, "rb") as f:
        f.seek(size - 150 * 2048)
        assert f.read() == b"\0" * (150 * 2048)


def test_file_mode_and_atomic_replace(tmp_path):
    path = _build(tmp_path)
    # The drive holds user data: readable by the services only (issue 12).
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # Rebuilding replaces the file; no temporary files are left behind.
    other = ConfigDriveContents(instance_id="iid-2", hostname="two")
    configdrive.build_iso(other, path)
    assert configdrive.read_iso(path)["meta-data"].startswith(b"instance-id: iid-2\n")
    assert os.listdir(tmp_path) == ["config.iso"]


def test_invalid_contents_leave_existing_file_alone(tmp_path):
    path = _build(tmp_path)
    before = open(path, "rb").read()
    with pytest.raises(ConfigDriveError):
        configdrive.build_iso(ConfigDriveContents(instance_id="i", hostname="bad_name"), path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["config.iso"]


def test_user_data_limit(tmp_path):
    ok = ConfigDriveContents(instance_id="i", hostname="h", user_data=b"x" * 65536)
    _build(tmp_path, ok)
    too_big = ConfigDriveContents(instance_id="i", hostname="h", user_data=b"x" * 65537)
    with pytest.raises(ConfigDriveError, match="65537 bytes, above the limit of 65536"):
        _build(tmp_path, too_big)
    small = ConfigDriveContents(instance_id="i", hostname="h", user_data=b"x" * 11)
    with pytest.raises(ConfigDriveError, match="above the limit of 10 bytes"):
        _build(tmp_path, small, max_user_data_bytes=10)


def test_error_is_a_value_error():
    assert issubclass(ConfigDriveError, ValueError)


@pytest.mark.parametrize(
    "mac",
    [
        "52:54:00:12:34",
        "52:54:00:12:34:5g",
        "52-54-00-12-34-56",
        "525400123456",
        "",
        "01:00:5e:00:00:01",  # multicast
    ],
)
def test_bad_mac(tmp_path, mac):
    nic = NetworkInterfaceConfig(mac=mac, address="10.0.0.5/24")
    contents = ConfigDriveContents(instance_id="i", hostname="h", interfaces=(nic,))
    with pytest.raises(ConfigDriveError, match="MAC"):
        _build(tmp_path, contents)
    assert not os.path.exists(tmp_path / "config.iso")


def test_duplicate_mac(tmp_path):
    nic = NetworkInterfaceConfig(mac="52:54:00:12:34:56")
    contents = ConfigDriveContents(instance_id="i", hostname="h", interfaces=(nic, nic))
    with pytest.raises(ConfigDriveError, match="more than one interface"):
        _build(tmp_path, contents)


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.256/24",
        "10.0.0.5/33",
        "10.0.0.5",
        "not-an-ip/24",
        "fd00::zz/64",
        "",
    ],
)
def test_bad_address(tmp_path, address):
    contents = ConfigDriveContents(
        instance_id="i",
        hostname="h",
        interfaces=(NetworkInterfaceConfig(mac="52:54:00:12:34:56", address=address),),
    )
    with pytest.raises(ConfigDriveError, match="invalid address"):
        _build(tmp_path, contents)


@pytest.mark.parametrize(
    "gateway, match",
    [
        ("10.0.0.300", "invalid gateway"),
        ("fd00::1", "IPv6 but address"),
        ("10.0.0.5", "own address"),
    ],
)
def test_bad_gateway(tmp_path, gateway, match):
    contents = ConfigDriveContents(
        instance_id="i",
        hostname="h",
        interfaces=(
            NetworkInterfaceConfig(mac="52:54:00:12:34:56", address="10.0.0.5/24", gateway=gateway),
        ),
    )
    with pytest.raises(ConfigDriveError, match=match):
        _build(tmp_path, contents)


def test_gateway_without_address(tmp_path):
    contents = ConfigDriveContents(
        instance_id="i",
        hostname="h",
        interfaces=(NetworkInterfaceConfig(mac="52:54:00:12:34:56", gateway="10.0.0.1"),),
    )
    with pytest.raises(ConfigDriveError, match="no address"):
        _build(tmp_path, contents)


def test_bad_nameserver(tmp_path):
    contents = ConfigDriveContents(
        instance_id="i",
        hostname="h",
        interfaces=(NetworkInterfaceConfig(mac="52:54:00:12:34:56", nameservers=("8.8.8",)),),
    )
    with pytest.raises(ConfigDriveError, match="invalid nameserver"):
        _build(tmp_path, contents)


@pytest.mark.parametrize(
    "hostname",
    [
        "",
        "bad_name",
        "-lead",
        "trail-",
        "has space",
        "a..b",
        "dot.",
        "x" * 64,
        "é",
        "a\nb",
        ("a" * 63 + ".") * 4 + "a",
    ],
)
def test_bad_hostname(tmp_path, hostname):
    with pytest.raises(ConfigDriveError, match="hostname"):
        _build(tmp_path, ConfigDriveContents(instance_id="i", hostname=hostname))


@pytest.mark.parametrize("hostname", ["a", "web-1", "0day", "node1.example.org", "x" * 63])
def test_good_hostname(hostname):
    meta = configdrive.render_files(ConfigDriveContents(instance_id="i", hostname=hostname))
    assert b"local-hostname: " in meta["meta-data"]


@pytest.mark.parametrize("instance_id", ["", "   ", "a\nb", "x" * 256, None])
def test_bad_instance_id(tmp_path, instance_id):
    with pytest.raises(ConfigDriveError, match="instance_id"):
        _build(tmp_path, ConfigDriveContents(instance_id=instance_id, hostname="h"))


@pytest.mark.parametrize("keys", ["ssh-rsa AAAA", ("",), ("ssh-rsa AAAA\nssh-rsa BBBB",)])
def test_bad_public_keys(tmp_path, keys):
    with pytest.raises(ConfigDriveError, match="public"):
        _build(tmp_path, ConfigDriveContents(instance_id="i", hostname="h", public_keys=keys))


def test_read_iso_rejects_non_iso(tmp_path):
    path = tmp_path / "junk.iso"
    path.write_bytes(b"\0" * 40000)
    with pytest.raises(ConfigDriveError, match="not a readable ISO"):
        configdrive.read_iso(str(path))
    with pytest.raises(ConfigDriveError):
        configdrive.read_volume_label(str(path))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("web_1", "web-1"),
        ("My VM!", "My-VM"),
        ("-x-", "x"),
        ("***", "instance"),
        ("a" * 80, "a" * 63),
        ("node..one", "node.one"),
    ],
)
def test_sanitize_hostname(name, expected):
    assert configdrive.sanitize_hostname(name) == expected
    configdrive.render_meta_data("i", configdrive.sanitize_hostname(name))


# --- templates: one pycdlib run per shape and second ----------------------------


def _contents(instance_id: str, user_data: bytes, nics: int = 1) -> ConfigDriveContents:
    return ConfigDriveContents(
        instance_id=instance_id,
        hostname="web-" + instance_id[-4:],
        user_data=user_data,
        interfaces=tuple(
            NetworkInterfaceConfig(mac="52:54:00:ab:cd:%02x" % (2 * i), address="10.0.0.%d/24" % i)
            for i in range(1, nics + 1)
        ),
    )


@pytest.fixture
def frozen(monkeypatch) -> list[float]:
    """time.time() (which pycdlib's dates read too) stands at ``frozen[0]``."""
    now = [1_700_000_000.25]
    monkeypatch.setattr(configdrive.time, "time", lambda: now[0])
    monkeypatch.setattr(configdrive, "_TEMPLATES", configdrive._Templates())
    return now


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (b"", b""),
        (b"#!/bin/sh\necho one\n", b"#!/bin/sh\necho two\n"),
        (b"a" * 5000, b"b" * 5000),  # three sectors
        (b"x" * 2048, b"y" * 2048),
    ],
    ids=["empty", "script", "multi-sector", "one-full-sector"],
)
def test_a_drive_like_the_last_one_is_what_pycdlib_writes(
    tmp_path, frozen, monkeypatch, first, second
):
    one, two = _contents("iid-0001", first), _contents("iid-0002", second)
    configdrive.build_iso(one, str(tmp_path / "one.iso"))
    real, calls = configdrive._pycdlib_image, []
    monkeypatch.setattr(
        configdrive, "_pycdlib_image", lambda files: calls.append(files) or real(files)
    )

    configdrive.build_iso(two, str(tmp_path / "two.iso"))

    assert calls == []  # made from the first drive's image
    expected = real(configdrive.render_files(two))[0] + b"\0" * configdrive._PAD_BYTES
    assert (tmp_path / "two.iso").read_bytes() == expected
    assert configdrive.read_iso(str(tmp_path / "two.iso")) == configdrive.render_files(two)
    assert configdrive.read_iso(str(tmp_path / "one.iso")) == configdrive.render_files(one)


def test_other_shapes_and_seconds_get_their_own_image(tmp_path, frozen):
    drives = [
        _contents("iid-0001", b"abc"),
        _contents("iid-0002", b"abcd"),  # another size
        _contents("iid-0003", b"abc", nics=2),  # another network-config
        _contents("iid-0004", b"abc"),
    ]
    for index, contents in enumerate(drives):
        frozen[0] += 1.0 if index == 3 else 0.0  # the last one a second later
        path = tmp_path / ("%d.iso" % index)
        configdrive.build_iso(contents, str(path))
        files = configdrive.render_files(contents)
        pad = b"\0" * configdrive._PAD_BYTES
        assert path.read_bytes() == configdrive._pycdlib_image(files)[0] + pad
        assert configdrive.read_iso(str(path)) == files
