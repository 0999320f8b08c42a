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
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from compute_driver.scheduler.placement import HostState

HostRecord = dict[str, Any]


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
    ) -> None:
        """
        :param load: reads every host record (``store.host_dict`` shape,
            annotated with zones and aggregate properties) from the store.
        :param ttl: seconds a read stays in use; 0 reads on every call.
        """
        self._load = load
        self._ttl = ttl
        self._clock = clock
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
                self._states = [HostState.from_record(r) for r in self._load()]
                self._read_at = self._clock()
            assert self._states is not None
            return list(self._states), fresh

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
