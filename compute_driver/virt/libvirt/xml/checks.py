"""Value checks shared by the element modules: each returns why a value is bad, or None."""

from __future__ import annotations

import re
import uuid as uuidlib

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
