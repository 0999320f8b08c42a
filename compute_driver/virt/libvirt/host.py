"""The libvirt connection of one host (kept open across libvirtd restarts), and the choice
of domain type."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from compute_driver import exception
from compute_driver.virt.libvirt import events, kvm_probe

LOG = logging.getLogger(__name__)

#: Seconds before the first attempt to reopen a dead connection; doubled after
#: each failure, up to RECONNECT_MAX_DELAY.
RECONNECT_FIRST_DELAY = 1.0
#: The longest wait between two attempts to reopen the connection.
RECONNECT_MAX_DELAY = 30.0


def choose_virt_type(uri: str, configured: str, probe_timeout: float) -> str:
    """The domain type for guests: 'test', 'kvm' or 'qemu'.

    :raises HypervisorUnavailable: ``kvm`` was required but is not usable.
    """
    if uri.startswith("test:"):
        return "test"
    if configured == "qemu":
        LOG.info("Using virt_type qemu (software emulation), as configured")
        return "qemu"
    usable, why = kvm_probe.kvm_usable(probe_timeout)
    if configured == "kvm":
        if not usable:
            raise exception.HypervisorUnavailable(uri=uri, reason="virt_type=kvm but %s" % why)
        LOG.info("Using virt_type kvm, as configured: %s", why)
        return "kvm"
    chosen = "kvm" if usable else "qemu"
    LOG.info("virt_type auto: using %s because %s", chosen, why)
    return chosen


class LibvirtHost:
    """Owns the libvirt connection; notices at once when libvirtd dies, and reconnects.

    A close callback on each connection reports a dead libvirtd without
    waiting for the next call. Then the host is unavailable (callbacks of
    :meth:`on_state_change` get ``False`` and the reason) and a thread
    reopens the connection with exponential backoff; once it is back, the
    domain event callbacks are registered on the new connection and the
    state callbacks get ``True``.
    """

    def __init__(self, uri: str) -> None:
        # NOTE: before any connection is opened: a remote connection only
        # watches its socket (events, keepalive, close callback) when an event
        # loop was registered first.
        events.start_event_loop()
        self.uri = uri
        self.events = events.DomainEventHandler()
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()  # held across open/close; never on the event thread
        self._state_lock = threading.Lock()  # held for bookkeeping only, no libvirt calls
        self._available: bool | None = None
        self._state_callbacks: list[Callable[[bool, str], None]] = []
        self._notifier = events.Worker("libvirt-host-state")
        self._reconnector: threading.Thread | None = None
        self._closed = threading.Event()
        self._stats_nowait = True

    # --- the connection ---------------------------------------------------------

    def get_connection(self) -> libvirt.virConnect:
        """An open connection, reconnecting if the old one died.

        :raises HypervisorUnavailable: libvirtd cannot be reached.
        """
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                LOG.warning("Connection to %s lost; reconnecting", self.uri)
                self._drop_locked()
            try:
                self._conn = self._open_locked()
            except exception.HypervisorUnavailable as exc:
                self._set_available(False, exc.kwargs["reason"])
                raise
            self._set_available(True, "connected to %s" % self.uri)
            return self._conn

    def _open_locked(self) -> libvirt.virConnect:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise exception.HypervisorUnavailable(
                uri=self.uri, reason=exc.get_error_message()
            ) from exc
        self._stats_nowait = True  # the new daemon may be another version
        try:
            conn.registerCloseCallback(self._on_close, None)
            if self.events.started:
                self.events.register(conn)
        except libvirt.libvirtError as exc:
            # NOTE: it died between open and register; do not keep a
            # connection we would not hear about.
            self._close_quietly(conn)
            raise exception.HypervisorUnavailable(
                uri=self.uri, reason=exc.get_error_message()
            ) from exc
        return conn

    def _drop_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self.events.deregister(conn)
            self._close_quietly(conn)

    @staticmethod
    def _close_quietly(conn: libvirt.virConnect) -> None:
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    def close(self) -> None:
        """Close the connection for good: no more reconnects or state callbacks."""
        self._closed.set()
        with self._lock:
            self._drop_locked()
        self.events.stop()
        self._notifier.stop()

    # --- availability -----------------------------------------------------------

    def on_state_change(self, callback: Callable[[bool, str], None]) -> None:
        """Call ``callback(available, reason)`` whenever libvirtd goes away or comes back.

        Callbacks run one at a time, in order, on a thread of their own; they
        may call :meth:`get_connection`.
        """
        self._state_callbacks.append(callback)

    @property
    def available(self) -> bool | None:
        """Whether libvirtd answered last time (None before the first connect)."""
        return self._available

    def _on_close(self, conn: libvirt.virConnect, reason: int, _opaque: Any) -> None:
        # NOTE: runs on the event loop thread: no libvirt calls and no
        # self._lock (a thread holding it may be waiting for this thread).
        if conn is not self._conn:
            return  # an old connection, already replaced
        why = _CLOSE_REASONS.get(reason, "reason %d" % reason)
        LOG.error("Connection to %s closed: %s", self.uri, why)
        self._set_available(False, "connection to libvirtd closed: %s" % why)

    def _set_available(self, available: bool, reason: str) -> None:
        """Record the state; on a change, notify and (when down) start reconnecting."""
        with self._state_lock:
            if self._available == available or self._closed.is_set():
                return
            self._available = available
            for callback in list(self._state_callbacks):
                self._notifier.submit(functools.partial(callback, available, reason))
            if not available and (self._reconnector is None or not self._reconnector.is_alive()):
                self._reconnector = threading.Thread(
                    target=self._reconnect, name="libvirt-reconnect", daemon=True
                )
                self._reconnector.start()
        if available:
            LOG.info("libvirt at %s is available: %s", self.uri, reason)
        else:
            LOG.error("libvirt at %s is unavailable: %s", self.uri, reason)

    def _reconnect(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while not self._closed.wait(delay):
            try:
                self.get_connection()
                return
            except exception.HypervisorUnavailable as exc:
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                LOG.warning("Cannot reconnect to %s (%s); retrying in %.1f s", self.uri, exc, delay)

    # --- domain events ------------------------------------------------------------

    def start_events(
        self, is_ours: events.DomainFilter, stopped_delay: float = events.STOPPED_DELAY
    ) -> None:
        """Deliver domain events to the callbacks of ``self.events``, on this and later connections.

        :raises HypervisorUnavailable: libvirtd cannot be reached now (events
            start flowing once it is back).
        """
        self.events.start(is_ours, stopped_delay)
        with self._lock:
            if self._conn is not None:
                try:
                    self.events.register(self._conn)
                except libvirt.libvirtError as exc:
                    # A dying connection: the next one registers them again.
                    LOG.debug("Registering event callbacks on %s: %s", self.uri, exc)
        self.get_connection()

    def stop_events(self) -> None:
        """Stop delivering domain events (held-back STOPPED events are dropped)."""
        with self._lock:
            if self._conn is not None:
                self.events.deregister(self._conn)
        self.events.stop()

    # --- bulk queries -------------------------------------------------------------

    def get_all_domain_stats(self, stats: int) -> list[tuple[libvirt.virDomain, dict[str, Any]]]:
        """One ``getAllDomainStats`` call over every domain, never waiting for a busy one.

        NOTE: with NOWAIT a domain whose monitor is stuck answers only what
        needs no job (its state does not), instead of holding up the whole
        call. Only a daemon that refuses the flag is asked without it.

        :raises HypervisorUnavailable: libvirtd cannot be reached.
        :raises libvirt.libvirtError: libvirtd refused.
        """
        conn = self.get_connection()
        try:
            if self._stats_nowait:
                try:
                    return conn.getAllDomainStats(
                        stats, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
                    )
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                        raise
                    LOG.info("%s refuses NOWAIT for domain stats; asking without it", self.uri)
                    self._stats_nowait = False
            return conn.getAllDomainStats(stats, 0)
        except libvirt.libvirtError as exc:
            self._raise_if_dead(conn, exc)
            raise

    def managed_save_uuids(self) -> set[str]:
        """UUIDs of the domains that have a managed-save image (one call for all).

        :raises HypervisorUnavailable: libvirtd cannot be reached.
        :raises libvirt.libvirtError: libvirtd refused.
        """
        conn = self.get_connection()
        try:
            domains = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)
        except libvirt.libvirtError as exc:
            self._raise_if_dead(conn, exc)
            raise
        return {d.UUIDString() for d in domains}

    def _raise_if_dead(self, conn: libvirt.virConnect, exc: libvirt.libvirtError) -> None:
        """Raise HypervisorUnavailable when ``exc`` came from a connection that died."""
        try:
            alive = conn.isAlive()
        except libvirt.libvirtError:
            alive = False
        if not alive:
            raise exception.HypervisorUnavailable(
                uri=self.uri, reason=exc.get_error_message()
            ) from exc


_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "I/O error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file (libvirtd exited)",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the client",
}
