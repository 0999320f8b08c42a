"""Choosing a host: the first filters and weigher.

A later change turns these into stevedore plugins; the contract stays:
filters drop hosts and say why, the weigher orders what is left, and the
claim in the store has the last word (a host can fill up between the
choice and the claim, so callers try the next host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResourceRequest:
    """What one server needs from a host."""

    vcpus: int
    memory_mb: int
    disk_gb: int


@dataclass(frozen=True)
class Limits:
    """Overcommit ratios and reservations from ``[scheduler]``."""

    cpu_ratio: float
    ram_ratio: float
    disk_ratio: float
    reserved_mb: int

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu_ratio": self.cpu_ratio,
            "ram_ratio": self.ram_ratio,
            "disk_ratio": self.disk_ratio,
            "reserved_mb": self.reserved_mb,
        }


def free_memory_mb(host: dict[str, Any], limits: Limits) -> float:
    return (host["memory_mb"] - limits.reserved_mb) * limits.ram_ratio - host["memory_mb_used"]


def _why_not(host: dict[str, Any], need: ResourceRequest, limits: Limits) -> str | None:
    if not host["enabled"]:
        return "disabled (%s)" % (host["disabled_reason"] or "no reason given")
    if host["state"] != "up":
        return "down (last report %s)" % (host["reported_at"] or "never")
    free_vcpus = host["vcpus"] * limits.cpu_ratio - host["vcpus_used"]
    if need.vcpus > free_vcpus:
        return "needs %d vCPUs, %g free" % (need.vcpus, free_vcpus)
    free_ram = free_memory_mb(host, limits)
    if need.memory_mb > free_ram:
        return "needs %d MiB RAM, %g free" % (need.memory_mb, free_ram)
    free_disk = host["disk_gb"] * limits.disk_ratio - host["disk_gb_used"]
    if need.disk_gb > free_disk:
        return "needs %d GiB disk, %g free" % (need.disk_gb, free_disk)
    return None


def rank_hosts(
    hosts: list[dict[str, Any]], need: ResourceRequest, limits: Limits
) -> tuple[list[dict[str, Any]], list[str]]:
    """Hosts that can take ``need``, most free RAM first, and why the others cannot.

    :returns: (candidates, reasons) where each reason reads "host: why".
    """
    candidates, reasons = [], []
    for host in hosts:
        why = _why_not(host, need, limits)
        if why is None:
            candidates.append(host)
        else:
            reasons.append("%s: %s" % (host["name"], why))
    candidates.sort(key=lambda h: (-free_memory_mb(h, limits), h["name"]))
    return candidates, reasons
