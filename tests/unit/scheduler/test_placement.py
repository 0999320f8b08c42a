"""rank_hosts: the filters say why each host was dropped; the rest are ordered by free RAM."""

from __future__ import annotations

from typing import Any

import pytest

from compute_driver.scheduler.placement import Limits, ResourceRequest, free_memory_mb, rank_hosts

LIMITS = Limits(cpu_ratio=2.0, ram_ratio=1.0, disk_ratio=1.0, reserved_mb=512)
NEED = ResourceRequest(vcpus=2, memory_mb=1024, disk_gb=10)


def host(name: str, **fields: Any) -> dict[str, Any]:
    record = {
        "name": name,
        "state": "up",
        "enabled": True,
        "disabled_reason": None,
        "vcpus": 4,
        "vcpus_used": 0,
        "memory_mb": 8192,
        "memory_mb_used": 0,
        "disk_gb": 100,
        "disk_gb_used": 0,
        "reported_at": "2026-01-01T00:00:00Z",
    }
    record.update(fields)
    return record


def test_filters_each_bad_host_with_its_reason():
    hosts = [
        host("disabled", enabled=False, disabled_reason="maintenance"),
        host("disabled-silently", enabled=False),
        host("down", state="down"),
        host("never-reported", state="down", reported_at=None),
        host("no-cpus", vcpus=0),
        host("busy-cpus", vcpus_used=7),
        host("small-ram", memory_mb=1024),
        host("small-disk", disk_gb=5),
        host("ok"),
    ]
    candidates, reasons = rank_hosts(hosts, NEED, LIMITS)
    assert [h["name"] for h in candidates] == ["ok"]
    assert reasons == [
        "disabled: disabled (maintenance)",
        "disabled-silently: disabled (no reason given)",
        "down: down (last report 2026-01-01T00:00:00Z)",
        "never-reported: down (last report never)",
        "no-cpus: needs 2 vCPUs, 0 free",
        "busy-cpus: needs 2 vCPUs, 1 free",
        "small-ram: needs 1024 MiB RAM, 512 free",
        "small-disk: needs 10 GiB disk, 5 free",
    ]


def test_few_cpus_fits_with_overcommit():
    # 1 CPU at ratio 2.0 gives 2 vCPUs: exactly enough.
    candidates, reasons = rank_hosts([host("one-cpu", vcpus=1)], NEED, LIMITS)
    assert [h["name"] for h in candidates] == ["one-cpu"]
    assert reasons == []


def test_exact_fit_is_accepted():
    exact = host("exact", vcpus=1, memory_mb=512 + 1024, disk_gb=10)
    assert [h["name"] for h in rank_hosts([exact], NEED, LIMITS)[0]] == ["exact"]


def test_sorted_by_free_ram_then_name():
    hosts = [
        host("b-4g", memory_mb=4096 + 512),
        host("c-16g", memory_mb=16384 + 512),
        host("a-4g", memory_mb=4096 + 512),
        host("d-16g-half-used", memory_mb=16384 + 512, memory_mb_used=8192),
    ]
    candidates, reasons = rank_hosts(hosts, NEED, LIMITS)
    assert [h["name"] for h in candidates] == ["c-16g", "d-16g-half-used", "a-4g", "b-4g"]
    assert reasons == []


def test_ram_ratio_and_reservation_count():
    limits = Limits(cpu_ratio=1.0, ram_ratio=1.5, disk_ratio=1.0, reserved_mb=1024)
    assert free_memory_mb(host("h", memory_mb=3072, memory_mb_used=1000), limits) == pytest.approx(
        2072
    )


def test_no_hosts():
    assert rank_hosts([], NEED, LIMITS) == ([], [])
