"""Shared value checks (each returns why a value is bad, or None) and memory units."""

from __future__ import annotations

import re
import uuid as uuidlib

# libvirt's binary memory units, as KiB multipliers (what the builders read back).
KIB_PER_UNIT = {
    "KiB": 1,
    "k": 1,
    "MiB": 1024,
    "M": 1024,
    "GiB": 1024**2,
    "G": 1024**2,
    "TiB": 1024**3,
    "T": 1024**3,
}
_MAC_RE = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")


def check_mac(value: str) -> str | None:
    """Return why ``value`` is not a unicast MAC address, or None."""
    if not _MAC_RE.match(value):
        return "is not a MAC address (expected six colon-separated hex octets)"
    return "is a multicast MAC address" if int(value[:2], 16) & 1 else None


def check_uuid(value: str) -> str | None:
    """Return why ``value`` is not a UUID, or None."""
    try:
        uuidlib.UUID(value)
    except ValueError:
        return "is not a UUID"
    return None


_CPUSET_RE = re.compile(r"^\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*$")


def check_cpuset(value: str) -> str | None:
    """Return why ``value`` is not a libvirt cpuset (``0-3,^2,8``), or None."""
    if not _CPUSET_RE.match(value):
        return "is not a cpuset (comma-separated numbers and ranges, e.g. '0-3,8')"
    for part in value.replace("^", "").split(","):
        low, _, high = part.partition("-")
        if high and int(high) < int(low):
            return f"has a descending range {part!r}"
    return None
