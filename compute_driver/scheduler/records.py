"""The public shapes of the scheduler's rows: hosts, flavors, images and servers.

Rows leave the store as plain dicts with stable keys (the shapes the RPC API
returns), built here from ORM objects or Core rows alike.
"""

from __future__ import annotations

import datetime
from typing import Any

import sqlalchemy as sa

from compute_driver.scheduler.models import Flavor, Host, Image, Instance, utcnow


def iso(value: datetime.datetime | None) -> str | None:
    """A naive UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return value.isoformat(timespec="seconds") + "Z" if value else None


def host_dict(host: Host, down_after: int) -> dict[str, Any]:
    """The public shape of a host; ``state`` is up or down from its last report."""
    now = utcnow()
    up = host.reported_at is not None and (now - host.reported_at).total_seconds() <= down_after
    return {
        "name": host.name,
        "state": "up" if up else "down",
        "enabled": host.enabled,
        "disabled_reason": host.disabled_reason,
        "vcpus": host.vcpus,
        "vcpus_used": host.vcpus_used,
        "memory_mb": host.memory_mb,
        "memory_mb_used": host.memory_mb_used,
        "disk_gb": host.disk_gb,
        "disk_gb_used": host.disk_gb_used,
        "capabilities": dict(host.capabilities or {}),
        "failed_builds": host.failed_builds or 0,
        "reported_at": iso(host.reported_at),
    }


def flavor_dict(flavor: Flavor | sa.Row) -> dict[str, Any]:
    """The public shape of a flavor."""
    return {
        "name": flavor.name,
        "vcpus": flavor.vcpus,
        "memory_mb": flavor.memory_mb,
        "root_gb": flavor.root_gb,
        "extra_specs": dict(flavor.extra_specs or {}),
    }


def image_dict(image: Image | sa.Row) -> dict[str, Any]:
    """The public shape of an image."""
    return {
        "uuid": image.uuid,
        "name": image.name,
        "disk_format": image.disk_format,
        "path": image.path,
        "size_bytes": image.size_bytes,
        "virtual_size": image.virtual_size,
        "checksum": image.checksum,
        "kernel_path": image.kernel_path,
        "initrd_path": image.initrd_path,
        "cmdline": image.cmdline,
        "properties": dict(image.properties or {}),
        "project": image.project,
        "created_at": iso(image.created_at),
    }


#: The public keys of a server's record and the columns they come from, in
#: the order listings select them.
_LISTED = (
    ("uuid", Instance.uuid),
    ("name", Instance.name),
    ("project", Instance.project),
    ("flavor", Instance.flavor_name),
    ("vcpus", Instance.vcpus),
    ("memory_mb", Instance.memory_mb),
    ("root_gb", Instance.root_gb),
    ("extra_specs", Instance.extra_specs),
    ("image", Instance.image_uuid),
    ("host", Instance.host),
    ("vm_state", Instance.vm_state),
    ("task_state", Instance.task_state),
    ("power_state", Instance.power_state),
    ("fault", Instance.fault),
    ("root_backend", Instance.root_backend),
    ("root_clone", Instance.root_clone),
    ("attempts", Instance.attempts),
    ("availability_zone", Instance.availability_zone),
    ("group", Instance.group_uuid),
    ("created_at", Instance.created_at),
    ("updated_at", Instance.updated_at),
)
#: What instance_dict reads of an instance, for listings.
LISTED_COLUMNS = tuple(column for _, column in _LISTED)
_PUBLIC_KEYS = tuple(key for key, _ in _LISTED)
_ATTRIBUTES = tuple((key, column.key) for key, column in _LISTED)


def instance_dict(instance: Any) -> dict[str, Any]:
    """The public shape of a server (user data is never echoed back), from
    a row that starts with :data:`LISTED_COLUMNS`, a dict of column values
    by attribute name (a missing one is NULL), or an Instance."""
    if isinstance(instance, sa.Row):
        # NOTE: by position, not by attribute: listings build thousands, and
        # zip leaves out the columns a query selects after these.
        record = dict(zip(_PUBLIC_KEYS, instance, strict=False))
    elif isinstance(instance, dict):
        record = {key: instance.get(attribute) for key, attribute in _ATTRIBUTES}
    else:
        record = {key: getattr(instance, attribute) for key, attribute in _ATTRIBUTES}
    # NOTE: copies of the JSON values, never the ORM's own; a column left at
    # NULL reads as its default.
    record["extra_specs"] = dict(record["extra_specs"] or {})
    record["root_clone"] = record["root_clone"] or "linked"
    record["attempts"] = list(record["attempts"] or [])
    record["created_at"] = iso(record["created_at"])
    record["updated_at"] = iso(record["updated_at"])
    return record
