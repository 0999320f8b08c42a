"""libvirt domain events, turned into typed events on a worker thread.

One native daemon thread per process runs libvirt's default event loop
(:func:`start_event_loop`). It must be registered before any connection is
opened: a remote connection opened earlier never watches its socket, so it
gets no events, no keepalive and no close callback.

:class:`DomainEventHandler` registers the lifecycle and device-removal
callbacks on a connection (again on every new connection after a libvirtd
restart, see :class:`~compute_driver.virt.libvirt.host.LibvirtHost`). The
libvirt callbacks only read the domain's name and UUID (both held by the
client, no RPC) and queue the work: user callbacks run on one worker
thread, never on the event loop thread.

A STOPPED event is held back for ``stopped_delay`` seconds and dropped when
another power event of the same domain arrives in that time, so a reboot
(stop, then start) is not reported as a stop (as Nova's
``_event_emit_delayed``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import libvirt

LOG = logging.getLogger(__name__)

#: Seconds a STOPPED event waits for a following start before it is delivered.
STOPPED_DELAY = 15.0
#: Name of the thread that runs libvirt's event loop.
EVENT_LOOP_THREAD = "libvirt-event-loop"

# NOTE: SHUTDOWN (the guest asked to power off; QEMU may still run), DEFINED
# and UNDEFINED change no power state: they are not reported.
_POWER_OF_EVENT = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: "running",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "running",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "paused",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "suspended",
}


@dataclass(frozen=True)
class LifecycleEvent:
    """A domain of ours changed power state (one of ``base.POWER_STATES``)."""

    uuid: str
    power_state: str


@dataclass(frozen=True)
class DeviceRemovedEvent:
    """The hypervisor finished unplugging device ``alias`` of a domain of ours."""

    uuid: str
    alias: str


@dataclass(frozen=True)
class DeviceRemovalFailedEvent:
    """The guest refused to unplug device ``alias``; it is still attached."""

    uuid: str
    alias: str


DomainEvent = LifecycleEvent | DeviceRemovedEvent | DeviceRemovalFailedEvent
DeviceEvent = DeviceRemovedEvent | DeviceRemovalFailedEvent
#: Tells whether a domain (by name and UUID) is one of ours.
DomainFilter = Callable[[str, str], bool]

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread.

    Idempotent; call it before opening any connection that needs events,
    keepalive or close callbacks.
    """
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        _loop_thread = threading.Thread(target=_run_event_loop, name=EVENT_LOOP_THREAD, daemon=True)
        _loop_thread.start()


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # noqa: BLE001 - the loop must outlive one bad callback
            LOG.exception("libvirt event loop iteration failed")


def power_state_of(event: int, detail: int) -> str | None:
    """Our power state after a libvirt lifecycle event, or None if it says nothing."""
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED:
            return None  # the guest moved away; the migration reports it
        if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED:
            return "suspended"  # managed save
    return _POWER_OF_EVENT.get(event)


class Worker:
    """One daemon thread running submitted functions in due-time order.

    A function submitted with a ``key`` can be cancelled (or replaced by a
    later submission with the same key) until it starts. The thread starts
    at the first submission. A failing function is logged, never fatal.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Hashable | None, Callable[[], None]]] = []
        self._keyed: dict[Hashable, int] = {}
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(
        self, func: Callable[[], None], delay: float = 0.0, key: Hashable | None = None
    ) -> None:
        """Run ``func`` after ``delay`` seconds; a keyed submission replaces a pending one."""
        with self._cond:
            if self._stopped:
                return
            seq = next(self._seq)
            if key is not None:
                self._keyed[key] = seq
            heapq.heappush(self._heap, (time.monotonic() + delay, seq, key, func))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def cancel(self, key: Hashable) -> bool:
        """Drop the pending function submitted with ``key``; True if there was one."""
        with self._cond:
            return self._keyed.pop(key, None) is not None

    def stop(self, timeout: float = 5.0) -> None:
        """Drop everything pending and end the thread (waiting up to ``timeout`` s)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._keyed.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _next(self) -> Callable[[], None] | None:
        """The next due function, waiting for it; None once stopped."""
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    self._cond.wait()
                    continue
                due, seq, key, func = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if key is not None:
                    if self._keyed.get(key) != seq:
                        continue  # cancelled or replaced
                    del self._keyed[key]
                return func
            return None

    def _run(self) -> None:
        while (func := self._next()) is not None:
            try:
                func()
            except Exception:  # noqa: BLE001 - one bad callback must not end the worker
                LOG.exception("Callback on %s failed", self.name)


class DomainEventHandler:
    """Turns libvirt domain events into typed events for registered callbacks.

    Register callbacks with :meth:`add_callback`, then :meth:`start`; the
    host calls :meth:`register` on each connection it opens.
    """

    def __init__(self) -> None:
        self._callbacks: list[Callable[[DomainEvent], None]] = []
        self._is_ours: DomainFilter = lambda _name, _uuid: True
        self.stopped_delay = STOPPED_DELAY
        self._worker: Worker | None = None
        # id(conn) -> (conn, callback ids): what to deregister from which connection.
        self._registered: dict[int, tuple[libvirt.virConnect, list[int]]] = {}
        self._waiters: dict[tuple[str, str], _DeviceWaiter] = {}
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._worker is not None

    def add_callback(self, callback: Callable[[DomainEvent], None]) -> None:
        """Call ``callback(event)`` (on the worker thread) for each event of ours."""
        self._callbacks.append(callback)

    def start(self, is_ours: DomainFilter, stopped_delay: float = STOPPED_DELAY) -> None:
        """Start delivering events of the domains ``is_ours(name, uuid)`` accepts."""
        self._is_ours = is_ours
        self.stopped_delay = stopped_delay
        if self._worker is None:
            self._worker = Worker("libvirt-domain-events")

    def stop(self) -> None:
        """Stop delivering; held-back STOPPED events are dropped."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()

    # --- per connection -------------------------------------------------------

    def register(self, conn: libvirt.virConnect) -> None:
        """Register our libvirt callbacks on ``conn``.

        Idempotent per connection.

        :raises libvirt.libvirtError: the connection refused (it is dead).
        """
        with self._lock:
            if id(conn) in self._registered:
                return
        ids = [
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
            ),
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._on_device_removed, None
            ),
            conn.domainEventRegisterAny(
                None,
                libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED,
                self._on_device_removal_failed,
                None,
            ),
        ]
        with self._lock:
            self._registered[id(conn)] = (conn, ids)

    def deregister(self, conn: libvirt.virConnect) -> None:
        """Remove our callbacks from ``conn``; errors of a dead connection are ignored."""
        with self._lock:
            _conn, ids = self._registered.pop(id(conn), (None, []))
        for callback_id in ids:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError as exc:
                LOG.debug("Deregistering event callback %d: %s", callback_id, exc)

    # --- device removal waits -------------------------------------------------

    def expect_device_removed(self, uuid: str, alias: str) -> None:
        """Start listening for the removal of ``alias``; call it before asking to detach.

        NOTE: an unplug can complete before the detach call returns, so the
        waiter must exist first; a removal nobody expects is not kept.
        """
        with self._lock:
            self._waiters[(uuid, alias)] = _DeviceWaiter()

    def wait_for_device_removed(self, uuid: str, alias: str, timeout: float) -> DeviceEvent | None:
        """Wait up to ``timeout`` s for the outcome of unplugging ``alias``.

        :returns: :class:`DeviceRemovedEvent` once removed,
            :class:`DeviceRemovalFailedEvent` when the guest refused, None on
            timeout (the device may still go later).
        """
        with self._lock:
            waiter = self._waiters.setdefault((uuid, alias), _DeviceWaiter())
        try:
            if waiter.done.wait(timeout):
                return waiter.result
            return None
        finally:
            with self._lock:
                if self._waiters.get((uuid, alias)) is waiter:
                    del self._waiters[(uuid, alias)]

    # --- libvirt callbacks (event loop thread: no libvirt RPC, no blocking) -----

    def _on_lifecycle(
        self, _conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int, _op: Any
    ) -> None:
        uuid = dom.UUIDString()
        worker = self._worker
        if worker is None or not self._is_ours(dom.name(), uuid):
            return
        if event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
            # NOTE: a deleted domain must not be reported "shutdown" later.
            worker.cancel(uuid)
            return
        power_state = power_state_of(event, detail)
        if power_state is None:
            return
        LOG.debug("Domain %s: event %d/%d, %s", uuid, event, detail, power_state)
        deliver = self._deliver_func(LifecycleEvent(uuid, power_state))
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            # Replaces any STOPPED still held for this domain.
            worker.submit(deliver, delay=self.stopped_delay, key=uuid)
        else:
            if worker.cancel(uuid):
                LOG.debug(
                    "Domain %s restarted within %.1f s: stop not reported", uuid, self.stopped_delay
                )
            worker.submit(deliver)

    def _on_device_removed(
        self, _conn: libvirt.virConnect, dom: libvirt.virDomain, alias: str, _op: Any
    ) -> None:
        self._device_event(DeviceRemovedEvent(dom.UUIDString(), alias), dom.name())

    def _on_device_removal_failed(
        self, _conn: libvirt.virConnect, dom: libvirt.virDomain, alias: str, _op: Any
    ) -> None:
        self._device_event(DeviceRemovalFailedEvent(dom.UUIDString(), alias), dom.name())

    def _device_event(self, event: DeviceEvent, name: str) -> None:
        with self._lock:
            waiter = self._waiters.get((event.uuid, event.alias))
        if waiter is not None:
            waiter.result = event
            waiter.done.set()
        worker = self._worker
        if worker is not None and self._is_ours(name, event.uuid):
            worker.submit(self._deliver_func(event))

    def _deliver_func(self, event: DomainEvent) -> Callable[[], None]:
        def deliver() -> None:
            for callback in list(self._callbacks):
                try:
                    callback(event)
                except Exception:  # noqa: BLE001 - one bad callback must not starve others
                    LOG.exception("Event callback failed on %s", event)

        return deliver


class _DeviceWaiter:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: DeviceEvent | None = None
