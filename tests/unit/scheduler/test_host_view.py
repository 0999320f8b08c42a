"""The scheduler's host view: kept for a while, counts its own claims, never decides alone."""

from __future__ import annotations

import datetime
import socket
import threading
from typing import Any

from oslo_config import cfg

from compute_driver.rpc import transport
from compute_driver.scheduler.host_view import Hearing, HostView


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


# --- judging hosts down only by silence the scheduler could hear (issue 13 item 8)


class Broker:
    """Whether the broker accepts the scheduler (what Hearing's probe asks)."""

    def __init__(self) -> None:
        self.up = True
        self.probes = 0

    def __call__(self) -> bool:
        self.probes += 1
        return self.up


def _at(clock: Clock) -> str:
    return datetime.datetime.fromtimestamp(clock.now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reported(name: str, clock: Clock, down_after: float, reported: float) -> dict[str, Any]:
    """A host record as the store gives it: down by its plain silence."""
    record = _record(name)
    at = Clock()
    at.now = reported
    record["reported_at"] = _at(at)
    record["state"] = "up" if clock.now - reported <= down_after else "down"
    return record


def test_a_broker_outage_longer_than_the_down_time_makes_no_host_down() -> None:
    clock, broker = Clock(), Broker()
    clock.now = 1_000_000.0
    hearing = Hearing(down_after=60, probe=broker, clock=clock)
    reports = {"a": clock.now, "b": clock.now, "dead": clock.now - 300}

    def load() -> list[dict[str, Any]]:
        return [_reported(n, clock, 60, t) for n, t in sorted(reports.items())]

    view = HostView(load, ttl=0.0, hearing=hearing)
    hearing.heard()
    # The broker stops for 96 s: no report, and the probes are refused.
    broker.up = False
    for _ in range(96):
        clock.now += 1
        hearing.check()
    assert hearing.deaf()
    up = {h.name: h.up for h in view.hosts()[0]}
    assert up == {"a": True, "b": True, "dead": False}
    # Back: the scheduler reaches the broker before any agent reports again.
    broker.up = True
    clock.now += 1
    hearing.check()
    assert not hearing.deaf()
    up = {h.name: h.up for h in view.hosts()[0]}
    assert up == {"a": True, "b": True, "dead": False}
    # "b" reports; "a" never does again: down once silent 60 s while heard.
    clock.now += 2
    reports["b"] = clock.now
    hearing.heard()
    clock.now += 57
    assert {h.name: h.up for h in view.hosts()[0]}["a"] is True
    clock.now += 5
    assert {h.name: h.up for h in view.hosts()[0]}["a"] is False


def test_a_silent_host_is_down_while_the_broker_answers() -> None:
    """With one host, or every agent dead, nobody reports: the probe tells
    the scheduler it could have heard them."""
    clock, broker = Clock(), Broker()
    clock.now = 1_000_000.0
    hearing = Hearing(down_after=60, probe=broker, clock=clock)
    reported = clock.now
    view = HostView(lambda: [_reported("only", clock, 60, reported)], ttl=0.0, hearing=hearing)
    for _ in range(61):
        clock.now += 1
        hearing.check()
    assert broker.probes == 61 and not hearing.deaf()
    assert view.hosts()[0][0].up is False


def test_reports_spare_the_probe() -> None:
    clock, broker = Clock(), Broker()
    hearing = Hearing(down_after=60, probe=broker, clock=clock)
    hearing.heard()
    hearing.check()
    assert broker.probes == 0
    hearing.check()
    assert broker.probes == 1


def test_a_host_that_never_reported_stays_down() -> None:
    clock, broker = Clock(), Broker()
    broker.up = False
    hearing = Hearing(down_after=60, probe=broker, clock=clock)
    hearing.check()
    record = _record("new")
    record["state"] = "down"
    view = HostView(lambda: [record], ttl=0.0, hearing=hearing)
    assert view.hosts()[0][0].up is False


def test_the_probe_asks_the_broker_of_the_configuration(fresh_conf: cfg.ConfigOpts) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fresh_conf([], default_config_files=[])
    transport.get_transport(fresh_conf)  # oslo.messaging registers transport_url
    try:
        fresh_conf.set_override("transport_url", "rabbit://guest:guest@127.0.0.1:%d/" % port)
        refused = Hearing.from_conf(fresh_conf)
        refused.check()
        assert refused.deaf()
        fresh_conf.set_override("transport_url", "kombu+memory:///")
        in_process = Hearing.from_conf(fresh_conf)
        in_process.check()
        assert not in_process.deaf()
    finally:
        fresh_conf.clear_override("transport_url")
        transport.cleanup()
