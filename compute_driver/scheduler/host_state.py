"""What the filters and weighers look at: one host's state, the request, the limits.

Below :mod:`compute_driver.scheduler.placement`, which loads the filters and
weighers; they import these views from here so that no cycle runs through
the placement engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from oslo_config import cfg

#: Flavor extra specs naming what a server needs on its host (comma-separated;
#: every name listed must be there). Outside the ``hw:`` namespace on purpose:
#: they are about the host, not the guest's hardware.
NETWORK_PLUGINS_SPEC = "network:plugins"
STORAGE_BACKENDS_SPEC = "storage:backends"


@dataclasses.dataclass(frozen=True)
class Limits:
    """Overcommit ratios and reservations from ``[scheduler]``."""

    cpu_ratio: float
    ram_ratio: float
    disk_ratio: float
    reserved_mb: int

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Limits:
        opts = conf.scheduler
        return cls(
            cpu_ratio=opts.cpu_allocation_ratio,
            ram_ratio=opts.ram_allocation_ratio,
            disk_ratio=opts.disk_allocation_ratio,
            reserved_mb=opts.reserved_host_memory_mb,
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu_ratio": self.cpu_ratio,
            "ram_ratio": self.ram_ratio,
            "disk_ratio": self.disk_ratio,
            "reserved_mb": self.reserved_mb,
        }


@dataclasses.dataclass(frozen=True)
class HostState:
    """A host as placement sees it: the store's record, read-only."""

    name: str
    up: bool
    enabled: bool
    disabled_reason: str | None
    reported_at: str | None
    vcpus: int
    vcpus_used: int
    memory_mb: int
    memory_mb_used: int
    disk_gb: int
    disk_gb_used: int
    #: What the agent reported: virt_type, arch, network_plugins, ...
    capabilities: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Servers on the host; None when not counted (no filter needed it).
    num_instances: int | None = None
    #: Recent failed builds; 0 until the store keeps the counter.
    failed_builds: int = 0
    #: Its availability zone (from its aggregates, or the default zone).
    availability_zone: str | None = None
    #: Property -> the values the host's aggregates give it.
    aggregate_properties: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], num_instances: int | None = None) -> HostState:
        """From the public host shape of ``store.host_dict``."""
        if num_instances is None:
            num_instances = record.get("num_instances")
        return cls(
            name=record["name"],
            up=record["state"] == "up",
            enabled=record["enabled"],
            disabled_reason=record["disabled_reason"],
            reported_at=record["reported_at"],
            vcpus=record["vcpus"],
            vcpus_used=record["vcpus_used"],
            memory_mb=record["memory_mb"],
            memory_mb_used=record["memory_mb_used"],
            disk_gb=record["disk_gb"],
            disk_gb_used=record["disk_gb_used"],
            capabilities=dict(record.get("capabilities") or {}),
            num_instances=num_instances,
            failed_builds=record.get("failed_builds") or 0,
            availability_zone=record.get("availability_zone"),
            aggregate_properties=dict(record.get("aggregate_properties") or {}),
        )

    # NOTE: the same arithmetic as the conditional UPDATE of store.claim, so
    # that a host the filters pass is one the claim accepts.
    def free_vcpus(self, limits: Limits) -> float:
        return self.vcpus * limits.cpu_ratio - self.vcpus_used

    def free_memory_mb(self, limits: Limits) -> float:
        return (self.memory_mb - limits.reserved_mb) * limits.ram_ratio - self.memory_mb_used

    def free_disk_gb(self, limits: Limits) -> float:
        return self.disk_gb * limits.disk_ratio - self.disk_gb_used


@dataclasses.dataclass(frozen=True)
class RequestSpec:
    """What one server needs from a host."""

    instance: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image_properties: Mapping[str, str] = dataclasses.field(default_factory=dict)
    extra_specs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    network_plugins: frozenset[str] = frozenset()
    storage_backends: frozenset[str] = frozenset()
    #: Hosts already tried for this build (a reschedule skips them).
    tried_hosts: frozenset[str] = frozenset()
    #: The availability zone asked for (None: any).
    availability_zone: str | None = None
    #: The policy of the server group it joins, and where its members are
    #: (host -> number of members).
    group_policy: str | None = None
    group_hosts: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_records(
        cls,
        instance: str,
        flavor: Mapping[str, Any],
        image: Mapping[str, Any],
        tried_hosts: Iterable[str] = (),
        storage_backends: Iterable[str] = (),
        availability_zone: str | None = None,
        group: Mapping[str, Any] | None = None,
    ) -> RequestSpec:
        """From the store's flavor and image shapes.

        :param instance: the server's name (for messages).
        :param tried_hosts: hosts a reschedule must skip.
        :param storage_backends: backends the request needs besides the
            flavor's (a root disk or boot volume on a named backend).
        :param group: the server group it joins (``policy``, ``hosts``).
        """
        specs = dict(flavor.get("extra_specs") or {})
        return cls(
            instance=instance,
            vcpus=flavor["vcpus"],
            memory_mb=flavor["memory_mb"],
            disk_gb=flavor["root_gb"],
            image_properties=dict(image.get("properties") or {}),
            extra_specs=specs,
            network_plugins=split_names(specs.get(NETWORK_PLUGINS_SPEC)),
            storage_backends=split_names(specs.get(STORAGE_BACKENDS_SPEC))
            | frozenset(storage_backends),
            tried_hosts=frozenset(tried_hosts),
            availability_zone=availability_zone,
            group_policy=group["policy"] if group else None,
            group_hosts=dict(group["hosts"]) if group else {},
        )


def split_names(value: str | None) -> frozenset[str]:
    """The names of a comma- or space-separated property value."""
    return frozenset((value or "").replace(",", " ").split())
