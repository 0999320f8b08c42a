"""The scheduler's view of its hosts: read from the store at most every few seconds.

Placement needs every host's record (capacity, use, capabilities, zone,
aggregate properties) for every create. Reading and annotating a hundred
host rows costs milliseconds, more than the rest of a create together, and
a busy scheduler placed one server after another on the same view anyway.
So the view is read once and kept for ``[scheduler] host_view_ttl``
seconds; the scheduler's own claims are subtracted from it as they succeed
(:meth:`HostView.consume`), so the next create sees them at once.

NOTE: the view only orders the candidates; it never decides alone. A
claim is the store's conditional UPDATE (``Store.claim``): a host the view
thinks has room but that is full, disabled or gone fails its claim, the
next candidate is tried, and the view is read again. What another
scheduler did, an operator's change made through another scheduler, or a
host going down is seen within ``host_view_ttl`` seconds; a change made
through this scheduler is seen at once (:meth:`HostView.invalidate`).

A host is down when it has been silent for ``[scheduler] service_down_time``
**while this scheduler could hear it** (:class:`Hearing`): after a broker
outage longer than that, every host was silent, and every create was refused
"host down" until each agent's next report.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from compute_driver import exception
from compute_driver.rpc import transport
from compute_driver.scheduler.placement import HostState

LOG = logging.getLogger(__name__)

HostRecord = dict[str, Any]

#: Deaf periods remembered; older ones excuse no silence worth judging.
KEEP_DEAF_PERIODS = 16


class Hearing:
    """When this scheduler could hear its hosts, so that only their silence
    while it could counts against them.

    It hears while reports arrive (:meth:`heard`). When none arrived since
    the last :meth:`check`, the broker is probed: refused, the scheduler is
    deaf since it last heard anyone; answering, the silence is the hosts'.
    A host's silence is the time since its last report minus the time the
    scheduler was deaf meanwhile.

    NOTE: a probe, not "nobody reports": with one host, or all agents dead,
    nobody reports either, and those hosts are down.

    Thread-safe; times are wall-clock seconds, as the reports' timestamps.
    """

    def __init__(
        self,
        down_after: float,
        probe: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        :param down_after: seconds of silence that make a host down.
        :param probe: whether the broker accepts this scheduler now.
        """
        self.down_after = down_after
        self._probe = probe
        self._clock = clock
        self._lock = threading.Lock()
        # NOTE: at start the scheduler just reached its broker (the start-up
        # check): it hears from now on; silence before counts as before.
        self._alive_at = clock()
        self._heard_since_check = False
        self._deaf_since: float | None = None
        self._deaf: list[tuple[float, float]] = []

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Hearing:
        """Probing the broker of ``conf`` as the scheduler connects to it."""

        def probe() -> bool:
            try:
                transport.check_broker(conf, retries=0)
            except exception.MessagingError as exc:
                LOG.debug("Broker probe failed: %s", exc)
                return False
            return True

        return cls(conf.scheduler.service_down_time, probe)

    def heard(self) -> None:
        """A report arrived."""
        with self._lock:
            self._heard_since_check = True
            self._alive(self._clock())

    def check(self) -> None:
        """Periodic: probe the broker when no report arrived since the last check."""
        with self._lock:
            heard, self._heard_since_check = self._heard_since_check, False
        if heard:
            return
        reachable = self._probe()
        with self._lock:
            if reachable:
                self._alive(self._clock())
            elif self._deaf_since is None:
                self._deaf_since = self._alive_at
                LOG.warning(
                    "The scheduler cannot reach its broker: no host is judged down by its "
                    "silence until it can"
                )

    def deaf(self) -> bool:
        """Whether the scheduler cannot hear now (its last probe failed)."""
        with self._lock:
            return self._deaf_since is not None

    def silence(self, reported_at: float) -> float:
        """Seconds since ``reported_at`` during which the scheduler could hear."""
        with self._lock:
            now = self._clock()
            periods = list(self._deaf)
            if self._deaf_since is not None:
                periods.append((self._deaf_since, now))
        counted = now - reported_at
        for start, end in periods:
            counted -= max(0.0, min(end, now) - max(start, reported_at))
        return counted

    def is_up(self, reported_at: float | None) -> bool:
        """Whether a host last heard at ``reported_at`` (None: never) is up."""
        return reported_at is not None and self.silence(reported_at) <= self.down_after

    def _alive(self, now: float) -> None:
        # Under the lock.
        if self._deaf_since is not None:
            LOG.warning(
                "The scheduler hears again after %.0f s: hosts silent meanwhile are not "
                "down for it",
                now - self._deaf_since,
            )
            self._deaf.append((self._deaf_since, now))
            del self._deaf[:-KEEP_DEAF_PERIODS]
            self._deaf_since = None
        self._alive_at = now


def report_time(value: str | None) -> float | None:
    """A host record's ``reported_at`` (``YYYY-MM-DDTHH:MM:SSZ``) as epoch seconds."""
    if value is None:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class HostView:
    """The hosts as placement's HostStates, kept for ``ttl`` seconds.

    Thread-safe: RPC worker threads read and consume it at once. HostStates
    are immutable, so callers get the view's own; a claim replaces one.
    """

    def __init__(
        self,
        load: Callable[[], list[HostRecord]],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        hearing: Hearing | None = None,
    ) -> None:
        """
        :param load: reads every host record (``store.host_dict`` shape,
            annotated with zones and aggregate properties) from the store.
        :param ttl: seconds a read stays in use; 0 reads on every call.
        :param hearing: judges a host the record calls down by its silence
            while this scheduler could hear (None: the record's state).
        """
        self._load = load
        self._ttl = ttl
        self._clock = clock
        self.hearing = hearing
        self._lock = threading.Lock()
        self._states: list[HostState] | None = None
        self._read_at = 0.0

    def hosts(self) -> tuple[list[HostState], bool]:
        """Every host, and whether the store was read just now."""
        with self._lock:
            fresh = self._states is None or self._clock() - self._read_at >= self._ttl
            if fresh:
                # NOTE: read under the lock: concurrent callers wait for one
                # read instead of all reading the same rows at once.
                self._states = [self._judged(HostState.from_record(r)) for r in self._load()]
                self._read_at = self._clock()
            assert self._states is not None
            return list(self._states), fresh

    def _judged(self, state: HostState) -> HostState:
        # NOTE: only ever up from down: silence shorter than the down time is
        # short whether or not the scheduler could hear.
        if state.up or self.hearing is None:
            return state
        if self.hearing.is_up(report_time(state.reported_at)):
            return dataclasses.replace(state, up=True)
        return state

    def consume(self, host: str, vcpus: int, memory_mb: int, disk_gb: int) -> None:
        """Count a claim this scheduler just made on ``host``."""
        with self._lock:
            for index, state in enumerate(self._states or ()):
                if state.name == host:
                    assert self._states is not None
                    self._states[index] = dataclasses.replace(
                        state,
                        vcpus_used=state.vcpus_used + vcpus,
                        memory_mb_used=state.memory_mb_used + memory_mb,
                        disk_gb_used=state.disk_gb_used + disk_gb,
                        num_instances=None
                        if state.num_instances is None
                        else state.num_instances + 1,
                    )
                    return

    def invalidate(self) -> None:
        """Read the store again on the next call (a change the view cannot follow)."""
        with self._lock:
            self._states = None
