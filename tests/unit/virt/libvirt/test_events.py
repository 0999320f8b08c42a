"""Domain events and reconnects of LibvirtHost, on libvirt's in-process test driver.

``test:///default`` emits lifecycle events through the event loop like a
real daemon does; it cannot die, so a dead connection is simulated by
making ``isAlive()`` answer False and calling the close callback.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.virt.libvirt import events
from compute_driver.virt.libvirt import host as lvhost
from compute_driver.virt.libvirt.driver import LibvirtDriver, domain_name
from compute_driver.virt.libvirt.events import (
    DeviceRemovalFailedEvent,
    DeviceRemovedEvent,
    LifecycleEvent,
)

URI = "test:///default"
#: Seconds to wait for something that should happen at once.
SOON = 5.0


class Recorder:
    """Collects what callbacks receive; lets a test wait for an item."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.threads: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, *args: Any) -> None:
        with self._cond:
            self.items.append(args[0] if len(args) == 1 else args)
            self.threads.append(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, match: Callable[[Any], bool] | Any, timeout: float = SOON) -> Any:
        test = match if callable(match) else (lambda item: item == match)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.items:
                    if test(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%r not received; got %r" % (match, self.items))
                self._cond.wait(left)

    def of(self, uuid: str) -> list[str]:
        """Power states received for one domain, in order."""
        with self._cond:
            return [
                e.power_state
                for e in self.items
                if isinstance(e, LifecycleEvent) and e.uuid == uuid
            ]


@pytest.fixture
def host() -> Iterator[lvhost.LibvirtHost]:
    h = lvhost.LibvirtHost(URI)
    yield h
    h.close()


@pytest.fixture
def received(host: lvhost.LibvirtHost) -> Recorder:
    recorder = Recorder()
    host.events.add_callback(recorder)
    return recorder


@pytest.fixture
def domains(host: lvhost.LibvirtHost) -> Iterator[Callable[..., libvirt.virDomain]]:
    """Defines test-driver domains (ours by default) and removes them afterwards."""
    made: list[libvirt.virDomain] = []

    def define(name: str | None = None, uuid: str | None = None) -> libvirt.virDomain:
        uuid = uuid or str(uuidlib.uuid4())
        domain = lvxml.Domain(
            type="test", name=name or domain_name(uuid), uuid=uuid, memory_kib=8192, vcpus=1
        )
        domain.os = lvxml.OS(type="hvm")
        virt_dom = host.get_connection().defineXML(domain.to_string())
        made.append(virt_dom)
        return virt_dom

    yield define
    for virt_dom in made:
        try:
            if virt_dom.isActive():
                virt_dom.destroy()
            virt_dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        except libvirt.libvirtError:
            pass  # the test removed it


def _start(host: lvhost.LibvirtHost, delay: float) -> None:
    host.start_events(LibvirtDriver.is_instance_domain, stopped_delay=delay)


# NOTE: how these tests show that something was NOT delivered without
# sleeping: the worker runs work in due-time order, and a STOPPED event is
# due ``delay`` after it happened. So when a marker domain of ours is stopped
# after the events under test and its "shutdown" has arrived, every event the
# handler had queued before (a stop of the other domain included) has been
# delivered already. What is asserted is the order, never a wall time.
def _stop_marker(received: Recorder, marker: libvirt.virDomain) -> None:
    """Stop ``marker`` (a running domain of ours) and wait for its delayed stop."""
    marker.destroy()
    received.wait_for(LifecycleEvent(marker.UUIDString(), "shutdown"))


def test_lifecycle_events_of_our_domains_reach_the_callback(host, received, domains) -> None:
    _start(host, delay=0.2)
    virt_dom = domains()
    uuid = virt_dom.UUIDString()
    virt_dom.create()
    received.wait_for(LifecycleEvent(uuid, "running"))
    virt_dom.suspend()
    received.wait_for(LifecycleEvent(uuid, "paused"))
    virt_dom.resume()
    virt_dom.managedSave()
    received.wait_for(LifecycleEvent(uuid, "suspended"))
    virt_dom.create()  # restores the saved guest
    received.wait_for(
        lambda e: received.of(uuid)[-1:] == ["running"] and len(received.of(uuid)) == 5
    )
    assert received.of(uuid) == ["running", "paused", "running", "suspended", "running"]


def test_callbacks_run_on_the_worker_not_the_event_loop(host, received, domains) -> None:
    _start(host, delay=0.2)
    virt_dom = domains()
    virt_dom.create()
    received.wait_for(LifecycleEvent(virt_dom.UUIDString(), "running"))
    assert set(received.threads) == {"libvirt-domain-events"}
    assert events.EVENT_LOOP_THREAD not in received.threads


def test_foreign_domains_are_ignored(host, received, domains) -> None:
    _start(host, delay=0.1)
    foreign = domains(name="other-" + uuidlib.uuid4().hex)
    # Takes the name one of ours would have, with another UUID.
    squatter = domains(name=domain_name(str(uuidlib.uuid4())))
    ours = domains()
    for virt_dom in (foreign, squatter):
        virt_dom.create()
        virt_dom.destroy()
    ours.create()
    received.wait_for(LifecycleEvent(ours.UUIDString(), "running"))
    _stop_marker(received, ours)  # the others' stops were due before
    assert {e.uuid for e in received.items} == {ours.UUIDString()}


def test_stop_then_start_within_the_delay_is_not_reported(host, received, domains) -> None:
    _start(host, delay=1.0)
    virt_dom, marker = domains(), domains()
    uuid = virt_dom.UUIDString()
    marker.create()
    virt_dom.create()
    received.wait_for(LifecycleEvent(uuid, "running"))
    virt_dom.destroy()
    virt_dom.create()  # a hard reboot, as libvirt shows it
    _stop_marker(received, marker)
    assert received.of(uuid) == ["running", "running"]


def test_stop_is_reported_after_the_delay(host, received, domains) -> None:
    _start(host, delay=1.0)
    virt_dom = domains()
    uuid = virt_dom.UUIDString()
    virt_dom.create()
    received.wait_for(LifecycleEvent(uuid, "running"))
    stopped_at = time.monotonic()
    virt_dom.destroy()
    received.wait_for(LifecycleEvent(uuid, "shutdown"))
    # NOTE: a lower bound only, which no load can break: it was held back.
    assert time.monotonic() - stopped_at >= 1.0
    assert received.of(uuid) == ["running", "shutdown"]


def test_undefined_domain_is_not_reported_stopped(host, received, domains) -> None:
    # NOTE: the undefine must come within the delay to cancel the stop; a
    # second leaves room for a loaded host between two libvirt calls.
    _start(host, delay=1.0)
    virt_dom, marker = domains(), domains()
    uuid = virt_dom.UUIDString()
    marker.create()
    virt_dom.create()
    received.wait_for(LifecycleEvent(uuid, "running"))
    virt_dom.destroy()
    virt_dom.undefine()
    _stop_marker(received, marker)
    assert received.of(uuid) == ["running"]


def test_a_failing_callback_does_not_stop_delivery(host, domains) -> None:
    def broken(_event: Any) -> None:
        raise RuntimeError("callback bug")

    received = Recorder()
    host.events.add_callback(broken)
    host.events.add_callback(received)  # after the broken one
    _start(host, delay=0.1)
    virt_dom = domains()
    uuid = virt_dom.UUIDString()
    virt_dom.create()
    virt_dom.suspend()
    received.wait_for(lambda _e: received.of(uuid) == ["running", "paused"])


def test_stop_events_ends_delivery(host, received, domains) -> None:
    _start(host, delay=0.1)
    conn = host.get_connection()
    host.stop_events()
    virt_dom, marker = domains(), domains()
    marker_started = threading.Event()

    def on_marker(_conn: Any, _dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            marker_started.set()

    # NOTE: libvirt offers a connection's events to its callbacks one event
    # at a time, in order: once this callback (of the marker alone) hears of
    # the marker's start, the events before it were offered too.
    callback_id = conn.domainEventRegisterAny(
        marker, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_marker, None
    )
    try:
        virt_dom.create()
        virt_dom.destroy()
        marker.create()
        assert marker_started.wait(SOON)
    finally:
        conn.domainEventDeregisterAny(callback_id)
    assert received.items == []


def test_device_removal_wakes_its_waiter_and_the_callback(host, received, domains) -> None:
    # NOTE: the test driver cannot detach devices; the libvirt callbacks are
    # called as the event loop would call them.
    _start(host, delay=0.1)
    virt_dom = domains()
    uuid = virt_dom.UUIDString()
    conn = host.get_connection()
    handler = host.events

    handler.expect_device_removed(uuid, "ua-vol1")
    handler._on_device_removed(conn, virt_dom, "ua-vol1", None)  # before anyone waits
    assert handler.wait_for_device_removed(uuid, "ua-vol1", SOON) == DeviceRemovedEvent(
        uuid, "ua-vol1"
    )

    handler.expect_device_removed(uuid, "ua-vol2")
    timer = threading.Timer(
        0.1, handler._on_device_removal_failed, (conn, virt_dom, "ua-vol2", None)
    )
    timer.start()
    assert handler.wait_for_device_removed(uuid, "ua-vol2", SOON) == DeviceRemovalFailedEvent(
        uuid, "ua-vol2"
    )

    assert handler.wait_for_device_removed(uuid, "ua-never", 0.2) is None

    received.wait_for(DeviceRemovalFailedEvent(uuid, "ua-vol2"))
    assert received.items == [
        DeviceRemovedEvent(uuid, "ua-vol1"),
        DeviceRemovalFailedEvent(uuid, "ua-vol2"),
    ]


def test_worker_runs_due_work_in_order_and_cancels_by_key() -> None:
    worker = events.Worker("test-worker")
    done: list[str] = []
    # NOTE: the first job holds the worker until everything is submitted and
    # cancelled, so no submission races the clock; then all run in due order.
    gate, finished = threading.Event(), threading.Event()
    try:
        worker.submit(lambda: gate.wait(SOON))
        worker.submit(lambda: done.append("late"), delay=0.3)
        worker.submit(lambda: done.append("held"), delay=0.1, key="k")
        worker.submit(lambda: done.append("replaced"), delay=0.05, key="r")
        worker.submit(lambda: done.append("replacement"), delay=0.15, key="r")
        worker.submit(lambda: done.append("now"))
        worker.submit(finished.set, delay=0.4)
        assert worker.cancel("k") is True
        assert worker.cancel("k") is False
        gate.set()
        assert finished.wait(SOON)
        assert done == ["now", "replacement", "late"]
    finally:
        worker.stop()


# --- connection loss and reconnect ------------------------------------------------


def _kill(conn: libvirt.virConnect) -> None:
    """Make ``conn`` look dead, as after libvirtd exited."""
    conn.isAlive = lambda: False  # type: ignore[method-assign]


def test_closed_connection_reports_unavailable_then_reconnects(
    host, received, domains, monkeypatch
) -> None:
    monkeypatch.setattr(lvhost, "RECONNECT_FIRST_DELAY", 0.1)
    states = Recorder()
    host.on_state_change(states)
    _start(host, delay=0.1)
    old = host.get_connection()
    states.wait_for((True, "connected to %s" % URI))

    _kill(old)
    host._on_close(old, libvirt.VIR_CONNECT_CLOSE_REASON_EOF, None)
    _available, reason = states.wait_for(lambda s: s[0] is False)
    assert "libvirtd exited" in reason
    states.wait_for(lambda _s: len(states.items) == 3)
    assert [s[0] for s in states.items] == [True, False, True]
    new = host.get_connection()
    assert new is not old

    # Events come over the new connection, once each: the pause comes after
    # every copy of the start.
    virt_dom = domains()
    virt_dom.create()
    virt_dom.suspend()
    received.wait_for(LifecycleEvent(virt_dom.UUIDString(), "paused"))
    assert received.of(virt_dom.UUIDString()) == ["running", "paused"]


def test_close_callback_of_a_replaced_connection_is_ignored(host, monkeypatch) -> None:
    states = Recorder()
    host.on_state_change(states)
    old = host.get_connection()
    states.wait_for((True, "connected to %s" % URI))
    _kill(old)
    assert host.get_connection() is not old  # replaced before its close callback came
    host._on_close(old, libvirt.VIR_CONNECT_CLOSE_REASON_EOF, None)
    # NOTE: a close that counted would have marked the host unavailable
    # before _on_close returned; the callbacks would only hear of it later.
    assert host.available is True
    assert [s[0] for s in states.items] == [True]


def test_reconnect_backs_off_exponentially(host, monkeypatch, caplog) -> None:
    monkeypatch.setattr(lvhost, "RECONNECT_FIRST_DELAY", 0.05)
    monkeypatch.setattr(lvhost, "RECONNECT_MAX_DELAY", 0.2)
    caplog.set_level(logging.WARNING, logger=lvhost.__name__)
    states = Recorder()
    host.on_state_change(states)
    old = host.get_connection()
    states.wait_for((True, "connected to %s" % URI))
    refusals = 3
    tried: list[str] = []
    told = threading.Event()
    real_open = libvirt.open

    def flaky_open(uri: str) -> libvirt.virConnect:
        thread = threading.current_thread().name
        tried.append(thread)
        if thread != "libvirt-reconnect" or tried.count(thread) <= refusals:
            raise libvirt.libvirtError("Failed to connect socket: Connection refused")
        # NOTE: libvirtd is back only once the test has been told it is down,
        # so that check does not race the reconnect thread.
        told.wait(SOON)
        return real_open(uri)

    monkeypatch.setattr(lvhost.libvirt, "open", flaky_open)
    _kill(old)
    host._on_close(old, libvirt.VIR_CONNECT_CLOSE_REASON_EOF, None)
    # Callers are told at once while it is down.
    with pytest.raises(exception.HypervisorUnavailable):
        host.get_connection()
    told.set()
    states.wait_for(lambda _s: len(states.items) == 3)
    assert [s[0] for s in states.items] == [True, False, True]
    assert tried.count("libvirt-reconnect") == refusals + 1
    # The waits the reconnect thread chose after each refusal: doubled from
    # 0.05, capped at 0.2. What it chose, not how long it took.
    chosen = [r.args[-1] for r in caplog.records if r.getMessage().startswith("Cannot reconnect")]
    assert chosen == [0.1, 0.2, 0.2]
