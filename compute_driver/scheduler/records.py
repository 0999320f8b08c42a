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
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


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
        "created_at": iso(image.created_at),
    }


def instance_dict(instance: Any) -> dict[str, Any]:
    """The public shape of a server (user data is never echoed back), from
    an Instance, a row of :data:`LISTED_COLUMNS` or any object with their
    attributes."""
    return {
        "uuid": instance.uuid,
        "name": instance.name,
        "project": instance.project,
        "flavor": instance.flavor_name,
        "vcpus": instance.vcpus,
        "memory_mb": instance.memory_mb,
        "root_gb": instance.root_gb,
        "extra_specs": dict(instance.extra_specs or {}),
        "image": instance.image_uuid,
        "host": instance.host,
        "vm_state": instance.vm_state,
        "task_state": instance.task_state,
        "power_state": instance.power_state,
        "fault": instance.fault,
        "root_backend": instance.root_backend,
        "root_clone": instance.root_clone or "linked",
        "attempts": list(instance.attempts or []),
        "availability_zone": instance.availability_zone,
        "group": instance.group_uuid,
        "created_at": iso(instance.created_at),
        "updated_at": iso(instance.updated_at),
    }


#: What instance_dict reads of an instance, for listings.
LISTED_COLUMNS = (
    Instance.uuid,
    Instance.name,
    Instance.project,
    Instance.flavor_name,
    Instance.vcpus,
    Instance.memory_mb,
    Instance.root_gb,
    Instance.extra_specs,
    Instance.image_uuid,
    Instance.host,
    Instance.vm_state,
    Instance.task_state,
    Instance.power_state,
    Instance.fault,
    Instance.root_backend,
    Instance.root_clone,
    Instance.attempts,
    Instance.availability_zone,
    Instance.group_uuid,
    Instance.created_at,
    Instance.updated_at,
)
