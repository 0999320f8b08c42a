"""The scheduler's host view: kept for a while, counts its own claims, never decides alone."""

from __future__ import annotations

import threading
from typing import Any

from compute_driver.scheduler.host_view import HostView


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _record(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "state": "up",
        "enabled": True,
        "disabled_reason": None,
        "reported_at": None,
        "vcpus": 4,
        "vcpus_used": 0,
        "memory_mb": 4096,
        "memory_mb_used": 0,
        "disk_gb": 100,
        "disk_gb_used": 0,
    }


def test_a_read_is_kept_for_the_ttl_then_read_again() -> None:
    reads = []
    clock = Clock()
    view = HostView(lambda: reads.append(1) or [_record("a")], ttl=2.0, clock=clock)
    assert view.hosts()[1] is True
    clock.now += 1.9
    assert view.hosts()[1] is False and len(reads) == 1
    clock.now += 0.1
    assert view.hosts()[1] is True and len(reads) == 2


def test_ttl_zero_reads_every_time() -> None:
    reads = []
    view = HostView(lambda: reads.append(1) or [_record("a")], ttl=0.0)
    view.hosts()
    view.hosts()
    assert len(reads) == 2


def test_own_claims_are_counted_at_once() -> None:
    view = HostView(lambda: [_record("a"), _record("b")], ttl=60.0)
    before, _ = view.hosts()
    view.consume("b", 2, 512, 10)
    view.consume("gone", 1, 1, 1)  # a host the view lacks: nothing to count
    hosts, fresh = view.hosts()
    assert not fresh
    assert hosts[0] == before[0]
    assert (hosts[1].vcpus_used, hosts[1].memory_mb_used, hosts[1].disk_gb_used) == (2, 512, 10)
    assert before[1].memory_mb_used == 0  # what a caller holds does not change under it


def test_invalidate_makes_the_next_call_read() -> None:
    reads = []
    view = HostView(lambda: reads.append(1) or [_record("a")], ttl=60.0)
    view.hosts()
    view.invalidate()
    assert view.hosts()[1] is True and len(reads) == 2


def test_concurrent_callers_share_one_read() -> None:
    reads = []
    gate = threading.Event()

    def load() -> list[dict[str, Any]]:
        reads.append(1)
        gate.wait(5)
        return [_record("a")]

    view = HostView(load, ttl=60.0)
    threads = [threading.Thread(target=view.hosts) for _ in range(8)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(5)
    assert len(reads) == 1
