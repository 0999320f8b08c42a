"""NoCloud config drives, built in-process with pycdlib.

A config drive is a small ISO 9660 image (with Joliet and Rock Ridge) whose
volume label is ``cidata``, holding the files cloud-init's NoCloud datasource
(and the test guest's ``/init``) read:

``meta-data``
    YAML: ``instance-id``, ``local-hostname`` and, when given, ``public-keys``.
``user-data``
    The user's bytes, verbatim (always present, possibly empty: NoCloud
    wants the file). A script starting with ``#!`` is run by the guest.
``network-config``
    NoCloud network-config version 1, only when interfaces are given: one
    ``type: physical`` entry per port (``ethN``, ``mac_address``, a
    ``type: static`` subnet), then one ``type: nameserver`` entry.

The YAML is written by hand (no YAML library): every value is validated
first, and strings are emitted plain only when YAML 1.1 and 1.2 both read
them back as the same string; anything else is double-quoted. (MAC addresses
are always quoted: YAML 1.1 reads ``52:54:00:12:34:56`` as a base-60 int.)

Usage::

    contents = ConfigDriveContents(
        instance_id="iid-1", hostname="web-1", user_data=b"#!/bin/sh\\necho hi\\n",
        interfaces=(NetworkInterfaceConfig("52:54:00:12:34:56", "10.0.0.5/24", "10.0.0.1"),))
    build_iso(contents, "/var/lib/compute-driver/instances/<uuid>/config.iso")

Invalid input raises :class:`ConfigDriveError` (a ``ValueError``) before any
file is touched; the ISO is written to a temporary file in the target
directory and renamed into place, so readers never see half an image.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

__all__ = [
    "VOLUME_LABEL",
    "DEFAULT_MAX_USER_DATA_BYTES",
    "ConfigDriveError",
    "NetworkInterfaceConfig",
    "ConfigDriveContents",
    "build_iso",
    "read_iso",
    "read_volume_label",
    "render_files",
    "render_meta_data",
    "render_network_config",
    "sanitize_hostname",
]

VOLUME_LABEL = "cidata"
DEFAULT_MAX_USER_DATA_BYTES = 64 * 1024

META_DATA = "meta-data"
USER_DATA = "user-data"
NETWORK_CONFIG = "network-config"

# ISO 9660 level-1 names (8.3, d-characters), mangled the way genisoimage
# does; Rock Ridge and Joliet carry the real names.
_ISO9660_NAMES = {
    META_DATA: "/META_DAT.;1",
    USER_DATA: "/USER_DAT.;1",
    NETWORK_CONFIG: "/NETWORK_.;1",
}

# Zeros appended to the image, as genisoimage does by default (-pad, 150
# sectors). Without them a small drive (~66 KiB) is shorter than the 68 KiB
# that busybox's volume_id reads to find a label: `findfs LABEL=cidata` then
# fails in busybox-based guests. Readers ignore data past the volume space.
_PAD_BYTES = 150 * 2048
_SECTOR = 2048
#: Shapes (file names and sizes) of this second's images kept as templates.
_MAX_TEMPLATES = 16

_MAX_INSTANCE_ID = 255
_MAX_PUBLIC_KEY = 16 * 1024
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Plain (unquoted) YAML scalars we emit: start with a letter, then only
# letters, digits and ._/- : never a number, a date, a key or an anchor.
_PLAIN_RE = re.compile(r"[A-Za-z][A-Za-z0-9._/-]*")
# Words YAML 1.1 or 1.2 read as booleans or null.
_RESERVED_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})


class ConfigDriveError(ValueError):
    """The config drive contents are invalid, or an ISO cannot be read."""


@dataclass(frozen=True)
class NetworkInterfaceConfig:
    """One guest NIC: its MAC and, optionally, a static address.

    ``address`` is CIDR (``10.0.0.5/24`` or ``fd00::5/64``); ``None`` leaves
    the NIC without a subnet. ``gateway`` must be of the same IP version.
    ``nameservers`` of all interfaces end up in one ``type: nameserver`` entry.
    """

    mac: str
    address: str | None = None
    gateway: str | None = None
    nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConfigDriveContents:
    """What goes on a config drive. Validated by :func:`build_iso`."""

    instance_id: str
    hostname: str
    user_data: bytes = b""
    public_keys: tuple[str, ...] = ()
    interfaces: tuple[NetworkInterfaceConfig, ...] = ()


# --- validation --------------------------------------------------------------


def _has_control(text: str) -> bool:
    return any(
        ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029\ufeff" for ch in text
    )


def _check_instance_id(instance_id: object) -> str:
    if not isinstance(instance_id, str) or not instance_id.strip():
        raise ConfigDriveError("instance_id must be a non-empty string, got %r" % (instance_id,))
    if len(instance_id) > _MAX_INSTANCE_ID:
        raise ConfigDriveError(
            "instance_id is %d characters long, above the limit of %d"
            % (len(instance_id), _MAX_INSTANCE_ID)
        )
    if _has_control(instance_id):
        raise ConfigDriveError("instance_id %r contains control characters" % (instance_id,))
    return instance_id


def _check_hostname(hostname: object) -> str:
    if not isinstance(hostname, str) or not hostname:
        raise ConfigDriveError("hostname must be a non-empty string, got %r" % (hostname,))
    if len(hostname) > 253:
        raise ConfigDriveError("hostname %r is longer than 253 characters" % (hostname,))
    for label in hostname.split("."):
        if not _LABEL_RE.fullmatch(label):
            raise ConfigDriveError(
                "invalid hostname %r: each dot-separated label must be 1-63 letters, digits "
                "or hyphens, not starting or ending with a hyphen" % (hostname,)
            )
    return hostname


def _check_user_data(user_data: object, max_bytes: int) -> bytes:
    if isinstance(user_data, str):
        data = user_data.encode("utf-8")
    elif isinstance(user_data, (bytes, bytearray, memoryview)):
        data = bytes(user_data)
    elif user_data is None:
        data = b""
    else:
        raise ConfigDriveError("user_data must be bytes, got %s" % type(user_data).__name__)
    if len(data) > max_bytes:
        raise ConfigDriveError(
            "user-data is %d bytes, above the limit of %d bytes" % (len(data), max_bytes)
        )
    return data


def _check_public_keys(keys: object) -> tuple[str, ...]:
    if isinstance(keys, str) or not isinstance(keys, (tuple, list)):
        raise ConfigDriveError("public_keys must be a tuple of strings, got %r" % (keys,))
    checked = []
    for key in keys:
        if not isinstance(key, str) or not key.strip():
            raise ConfigDriveError("each public key must be a non-empty string, got %r" % (key,))
        key = key.strip()
        if _has_control(key):
            raise ConfigDriveError(
                "public key %r... must be a single line without control characters" % (key[:40],)
            )
        if len(key) > _MAX_PUBLIC_KEY:
            raise ConfigDriveError(
                "public key %r... is longer than %d characters" % (key[:40], _MAX_PUBLIC_KEY)
            )
        checked.append(key)
    return tuple(checked)


def _check_mac(mac: object) -> str:
    if not isinstance(mac, str) or not _MAC_RE.fullmatch(mac):
        raise ConfigDriveError(
            "invalid MAC address %r: expected six colon-separated hex "
            "octets such as 52:54:00:12:34:56" % (mac,)
        )
    if int(mac[:2], 16) & 1:
        raise ConfigDriveError(
            "invalid MAC address %r: a NIC needs a unicast MAC (the first "
            "octet must be even)" % (mac,)
        )
    return mac.lower()


def _check_ip(value: object, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str):
        raise ConfigDriveError("invalid %s %r: expected an IP address string" % (what, value))
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise ConfigDriveError("invalid %s %r: %s" % (what, value, exc)) from None


def _check_address(address: object) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if not isinstance(address, str) or "/" not in address:
        raise ConfigDriveError(
            "invalid address %r: expected CIDR notation such as 10.0.0.5/24" % (address,)
        )
    try:
        return ipaddress.ip_interface(address)
    except ValueError as exc:
        raise ConfigDriveError("invalid address %r: %s" % (address, exc)) from None


@dataclass(frozen=True)
class _Port:
    name: str
    mac: str
    address: str | None
    gateway: str | None


def _check_interfaces(interfaces: object) -> tuple[list[_Port], list[str]]:
    if not isinstance(interfaces, (tuple, list)):
        raise ConfigDriveError(
            "interfaces must be a tuple of NetworkInterfaceConfig, got %r" % (interfaces,)
        )
    ports: list[_Port] = []
    nameservers: list[str] = []
    seen_macs: set[str] = set()
    for index, nic in enumerate(interfaces):
        if not isinstance(nic, NetworkInterfaceConfig):
            raise ConfigDriveError(
                "interfaces[%d] is %r, not a NetworkInterfaceConfig" % (index, nic)
            )
        mac = _check_mac(nic.mac)
        if mac in seen_macs:
            raise ConfigDriveError("MAC address %s is used by more than one interface" % mac)
        seen_macs.add(mac)
        address = gateway = None
        if nic.address is not None:
            iface = _check_address(nic.address)
            address = str(iface)
            if nic.gateway is not None:
                gw = _check_ip(nic.gateway, "gateway")
                if gw.version != iface.version:
                    raise ConfigDriveError(
                        "gateway %s is IPv%d but address %s is IPv%d"
                        % (gw, gw.version, address, iface.version)
                    )
                if gw == iface.ip:
                    raise ConfigDriveError("gateway %s is the interface's own address" % gw)
                gateway = str(gw)
        elif nic.gateway is not None:
            raise ConfigDriveError(
                "interface %s has a gateway (%s) but no address" % (mac, nic.gateway)
            )
        if isinstance(nic.nameservers, str) or not isinstance(nic.nameservers, (tuple, list)):
            raise ConfigDriveError(
                "nameservers must be a tuple of IP addresses, got %r" % (nic.nameservers,)
            )
        for ns in nic.nameservers:
            text = str(_check_ip(ns, "nameserver"))
            if text not in nameservers:
                nameservers.append(text)
        ports.append(_Port(name="eth%d" % index, mac=mac, address=address, gateway=gateway))
    return ports, nameservers


# --- YAML rendering ----------------------------------------------------------


def _yaml_str(value: str) -> str:
    """A YAML scalar that reads back as exactly ``value`` (a string)."""
    if _PLAIN_RE.fullmatch(value) and value.lower() not in _RESERVED_WORDS:
        return value
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append("\\x%02x" % code)
        elif ch in "\u2028\u2029\ufeff" or 0xD800 <= code <= 0xDFFF:
            out.append("\\u%04x" % code)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render_meta_data(instance_id: str, hostname: str, public_keys: tuple[str, ...] = ()) -> str:
    """The ``meta-data`` text (inputs are validated)."""
    lines = [
        "instance-id: %s" % _yaml_str(_check_instance_id(instance_id)),
        "local-hostname: %s" % _yaml_str(_check_hostname(hostname)),
    ]
    keys = _check_public_keys(public_keys)
    if keys:
        lines.append("public-keys:")
        lines.extend("- %s" % _yaml_str(key) for key in keys)
    return "\n".join(lines) + "\n"


def render_network_config(interfaces: tuple[NetworkInterfaceConfig, ...]) -> str | None:
    """The ``network-config`` text, or ``None`` when there are no interfaces."""
    ports, nameservers = _check_interfaces(interfaces)
    if not ports:
        return None
    lines = ["version: 1", "config:"]
    for port in ports:
        lines += [
            "- type: physical",
            "  name: %s" % _yaml_str(port.name),
            "  mac_address: %s" % _yaml_str(port.mac),
        ]
        if port.address is not None:
            lines += [
                "  subnets:",
                "  - type: static",
                "    address: %s" % _yaml_str(port.address),
            ]
            if port.gateway is not None:
                lines.append("    gateway: %s" % _yaml_str(port.gateway))
    if nameservers:
        lines += ["- type: nameserver", "  address:"]
        lines.extend("  - %s" % _yaml_str(ns) for ns in nameservers)
    return "\n".join(lines) + "\n"


def render_files(
    contents: ConfigDriveContents, max_user_data_bytes: int = DEFAULT_MAX_USER_DATA_BYTES
) -> dict[str, bytes]:
    """Validate ``contents`` and return the drive's files (name -> bytes)."""
    if not isinstance(contents, ConfigDriveContents):
        raise ConfigDriveError("contents must be a ConfigDriveContents, got %r" % (contents,))
    if (
        isinstance(max_user_data_bytes, bool)
        or not isinstance(max_user_data_bytes, int)
        or max_user_data_bytes < 0
    ):
        raise ConfigDriveError(
            "max_user_data_bytes must be a non-negative int, got %r" % (max_user_data_bytes,)
        )
    files = {
        META_DATA: render_meta_data(
            contents.instance_id, contents.hostname, contents.public_keys
        ).encode("utf-8"),
        USER_DATA: _check_user_data(contents.user_data, max_user_data_bytes),
    }
    network = render_network_config(contents.interfaces)
    if network is not None:
        files[NETWORK_CONFIG] = network.encode("utf-8")
    return files


def sanitize_hostname(name: str, default: str = "instance") -> str:
    """Turn a free-form instance name into a hostname :func:`build_iso` accepts.

    Like Nova: spaces and underscores become hyphens, other invalid
    characters are dropped, the result is cut to 63 characters and stripped
    of leading/trailing hyphens and dots; ``default`` if nothing is left.
    """
    text = re.sub(r"[ _]", "-", str(name))
    text = re.sub(r"[^A-Za-z0-9.-]", "", text)
    text = re.sub(r"\.{2,}", ".", text)
    labels = [label.strip("-")[:63].strip("-") for label in text.split(".")]
    text = ".".join(label for label in labels if label)[:63].strip("-.")
    return text or default


# --- ISO ---------------------------------------------------------------------


def build_iso(
    contents: ConfigDriveContents, path: str, max_user_data_bytes: int = DEFAULT_MAX_USER_DATA_BYTES
) -> None:
    """Write the config drive for ``contents`` to ``path`` (mode 0644).

    The image is written to a temporary file in the same directory and
    renamed over ``path``; it is padded with 300 KiB of zeros, like
    genisoimage's images. Raises :class:`ConfigDriveError` for invalid
    contents (nothing is written then) and ``OSError`` for I/O failures.
    """
    image = _TEMPLATES.image(render_files(contents, max_user_data_bytes))

    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "w+b") as out:
            out.write(image)
            # NOTE: the padding as a hole: it reads as zeros, like written ones,
            # without building and writing 300 KiB per drive.
            out.truncate(len(image) + _PAD_BYTES)
            out.flush()
            os.fsync(out.fileno())
        # NOTE: the drive holds the tenant's user data: readable by the
        # services only; libvirt labels it for QEMU when the domain starts.
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _pycdlib_image(files: dict[str, bytes]) -> tuple[bytes, dict[str, int]]:
    """The ISO of ``files`` made by pycdlib, and the offset of each file's data in it."""
    iso = pycdlib.PyCdlib()
    try:
        iso.new(
            interchange_level=1,
            sys_ident="LINUX",
            vol_ident=VOLUME_LABEL,
            app_ident_str="compute-driver",
            joliet=3,
            rock_ridge="1.09",
        )
        for name, data in files.items():
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                _ISO9660_NAMES[name],
                rr_name=name,
                joliet_path="/" + name,
                file_mode=0o100444,
            )
        out = io.BytesIO()
        iso.write_fp(out)
        offsets = {
            name: iso.get_record(iso_path=_ISO9660_NAMES[name]).extent_location() * _SECTOR
            for name in files
        }
        return out.getvalue(), offsets
    finally:
        iso.close()


class _Templates:
    """This second's images by shape: a drive of the same shape is a copy with its own data.

    NOTE: pycdlib builds a drive in about 0.5 ms of Python (several under a
    busy agent's GIL). Two drives whose files have the same names and sizes
    made in the same second differ only in the files' data (ISO 9660 keeps
    sizes, places and dates, never contents, and pycdlib's dates have whole
    seconds), so a burst of builds costs one pycdlib run per shape and
    second; the images are byte for byte what pycdlib writes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._second = -1
        self._images: dict[tuple[tuple[str, int], ...], tuple[bytes, dict[str, int]]] = {}

    def image(self, files: dict[str, bytes]) -> bytes:
        shape = tuple((name, len(data)) for name, data in files.items())
        second = int(time.time())
        with self._lock:
            if second != self._second:
                self._second, self._images = second, {}
            found = self._images.get(shape)
        if found is None:
            found = _pycdlib_image(files)
            with self._lock:
                # Only an image whose dates are all of ``second`` serves this second.
                if self._second == second == int(time.time()):
                    if len(self._images) < _MAX_TEMPLATES:
                        self._images[shape] = found
            return found[0]
        template, offsets = found
        image = bytearray(template)
        for name, data in files.items():
            image[offsets[name] : offsets[name] + len(data)] = data
        return bytes(image)


_TEMPLATES = _Templates()


def read_iso(path: str) -> dict[str, bytes]:
    """Every file of an ISO image: path relative to its root -> contents.

    Names come from Rock Ridge when present, else Joliet, else plain ISO 9660
    (lower-cased, without the ``;1`` version). Works on any ISO, e.g. one
    made by genisoimage.
    """
    iso = pycdlib.PyCdlib()
    try:
        iso.open(path)
    except PyCdlibException as exc:
        raise ConfigDriveError("%s is not a readable ISO 9660 image: %s" % (path, exc)) from None
    try:
        if iso.has_rock_ridge():
            kind = "rr_path"
        elif iso.has_joliet():
            kind = "joliet_path"
        else:
            kind = "iso_path"
        result: dict[str, bytes] = {}
        for dirname, _dirs, filenames in iso.walk(**{kind: "/"}):
            for filename in filenames:
                full = dirname.rstrip("/") + "/" + filename
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, **{kind: full})
                name = full.lstrip("/")
                if kind == "iso_path":
                    name = name.split(";", 1)[0].rstrip(".").lower()
                result[name] = buf.getvalue()
        return result
    except PyCdlibException as exc:
        raise ConfigDriveError("cannot read %s: %s" % (path, exc)) from None
    finally:
        iso.close()


def read_volume_label(path: str) -> str:
    """The volume identifier of the ISO's primary volume descriptor."""
    with open(path, "rb") as f:
        f.seek(16 * 2048)
        pvd = f.read(2048)
    if len(pvd) < 72 or pvd[:6] != b"\x01CD001":
        raise ConfigDriveError("%s has no ISO 9660 primary volume descriptor" % path)
    return pvd[40:72].decode("ascii", "replace").rstrip(" ")
