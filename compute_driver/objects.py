"""Value objects that cross layers: a server's flavor and image, and its user data.

A neutral module: it imports only the other neutral modules (exceptions and
the disk-image helpers), so storage backends, the scheduler and the virt
driver can all use it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from compute_driver import disk_image, exception


def decode_user_data(encoded: str | None) -> bytes:
    """The bytes of base64 ``encoded`` user data (b"" for none).

    :raises InvalidPayload: not valid base64 (the schema only checks the alphabet).
    """
    try:
        return base64.b64decode(encoded or "", validate=True)
    except (binascii.Error, ValueError):
        raise exception.InvalidPayload(
            method="user_data", reason="not valid base64 (bad length or padding)"
        ) from None


@dataclass(frozen=True)
class FlavorSpec:
    """The size of a server, as copied into the instance at create time."""

    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    extra_specs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageSpec:
    """An image in the image store; ``kernel_path`` set means direct kernel boot."""

    uuid: str
    name: str
    disk_format: str
    path: str
    virtual_size: int = 0
    kernel_path: str | None = None
    initrd_path: str | None = None
    cmdline: str | None = None
    properties: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, image: dict[str, Any], store_root: str) -> ImageSpec:
        """Build from ``schemas.IMAGE``, its files derived from the UUID.

        NOTE: a message never names a file: the disk, kernel and initrd are
        in this host's image store (``[image] store_path``) under the UUID,
        so a forged message can at most name another stored image.
        """
        uuid = image["uuid"]
        kernel = bool(image.get("kernel"))
        return cls(
            uuid=uuid,
            name=image["name"],
            disk_format=image["disk_format"],
            path=disk_image.stored_disk(store_root, uuid, image["disk_format"]),
            virtual_size=image.get("virtual_size", 0),
            kernel_path=disk_image.stored_file(store_root, uuid, "kernel") if kernel else None,
            initrd_path=disk_image.stored_file(store_root, uuid, "initrd") if kernel else None,
            cmdline=image.get("cmdline"),
            properties=image.get("properties") or {},
        )
