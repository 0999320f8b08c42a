"""The public shapes of the scheduler's rows, and the objects it sends to agents.

Rows leave the store as plain dicts with stable keys (the shapes the RPC API
returns), built here from ORM objects or Core rows alike. What an agent is
sent (a flavor, image, volume, network, port, the server to build) is made
here too, as the neutral objects of :mod:`compute_driver.objects`, whose
``to_wire()`` is the payload: one place from a row to the bus.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from compute_driver.objects import (
    FlavorSpec,
    ImageRef,
    NetworkSpec,
    PortSpec,
    ServerSpec,
    VolumeSpec,
)
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


def flavor_spec(flavor: Flavor | sa.Row[Any]) -> FlavorSpec:
    """A flavor of the catalog."""
    return FlavorSpec(
        name=flavor.name,
        vcpus=flavor.vcpus,
        memory_mb=flavor.memory_mb,
        root_gb=flavor.root_gb,
        extra_specs=dict(flavor.extra_specs or {}),
    )


def flavor_dict(flavor: Flavor | sa.Row[Any]) -> dict[str, Any]:
    """The public shape of a flavor (its wire form, ``schemas.FLAVOR``)."""
    return flavor_spec(flavor).to_wire()


def instance_flavor(instance: Mapping[str, Any]) -> FlavorSpec:
    """The flavor of a server record (:func:`instance_dict`), as copied at create time."""
    return FlavorSpec(
        name=instance["flavor"],
        vcpus=instance["vcpus"],
        memory_mb=instance["memory_mb"],
        root_gb=instance["root_gb"],
        extra_specs=dict(instance["extra_specs"] or {}),
    )


def image_dict(image: Image | sa.Row[Any]) -> dict[str, Any]:
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


def image_ref(image: Mapping[str, Any]) -> ImageRef:
    """An image record (:func:`image_dict`) as an agent gets it: no paths.

    The agent derives the files from its own ``[image] store_path`` and the
    UUID (:func:`compute_driver.disk_image.stored_disk`).
    """
    return ImageRef(
        uuid=image["uuid"],
        name=image["name"],
        disk_format=image["disk_format"],
        virtual_size=image["virtual_size"],
        kernel=bool(image.get("kernel_path")),
        cmdline=image.get("cmdline"),
        properties=dict(image.get("properties") or {}),
    )


def volume_spec(volume: Mapping[str, Any]) -> VolumeSpec:
    """A volume record as an agent gets it: its format and location once
    its backend made it, its target_dev once attached."""
    made = volume["location"] is not None
    return VolumeSpec(
        id=volume["uuid"],
        backend=volume["backend"],
        size_gb=volume["size_gb"],
        location=volume["location"] if made else None,
        format=volume["format"] if made else None,
        target_dev=volume["target_dev"] or None,
    )


def network_spec(network: Mapping[str, Any]) -> NetworkSpec:
    """A network record as an agent gets it."""
    return NetworkSpec(
        id=network["uuid"],
        name=network["name"],
        type=network["type"],
        segment=network["segment"],
        physnet=network["physnet"],
        mtu=network["mtu"],
        revision=network.get("revision", 0),
    )


def port_spec(port: Mapping[str, Any], network: Mapping[str, Any]) -> PortSpec:
    """A port record on ``network`` as an agent gets it."""
    return PortSpec(
        id=port["uuid"],
        network=network_spec(network),
        mac=port["mac"],
        address=port["address"],
        gateway=port["gateway"],
    )


def server_spec(
    instance: Mapping[str, Any],
    image: Mapping[str, Any],
    user_data: str | None,
    *,
    root_clone: str | None = None,
    root_backend: str | None = None,
    boot_volume: Mapping[str, Any] | None = None,
    volumes: Iterable[Mapping[str, Any]] = (),
    ports: Iterable[PortSpec] = (),
) -> ServerSpec:
    """What an agent needs to build the server of record ``instance``
    (:func:`instance_dict`): its flavor as copied at create time, its image
    record, its base64 user data, and the volume records and ports it has."""
    return ServerSpec(
        uuid=instance["uuid"],
        name=instance["name"],
        project=instance["project"],
        flavor=instance_flavor(instance),
        image=image_ref(image),
        created_at=instance["created_at"],
        user_data=user_data or None,
        root_clone=root_clone,
        root_backend=root_backend or None,
        boot_volume=volume_spec(boot_volume) if boot_volume is not None else None,
        volumes=tuple(volume_spec(v) for v in volumes),
        ports=tuple(ports),
    )


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
