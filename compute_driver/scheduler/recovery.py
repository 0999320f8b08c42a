"""Settling servers that a stopped or dead scheduler left in flight.

``create_server`` stores a server (building/scheduling), claims a host
(building/spawning, one transaction with the claim) and casts the build;
``delete_server`` marks it deleting and casts the delete. A scheduler
killed between two of these steps leaves the server in its state for good:
nothing else looks at it again (an agent reconciles only when *it*
restarts, and a repeated create by UUID returns the record as it is).
Agents' answers can be lost too: a scheduler stopped with SIGTERM while
builds it had just cast were finishing never applied their
``instance_update`` (tests/functional/scheduler/test_scheduler_restart.py).

Every scheduler sweeps every ``[scheduler] periodic_interval`` seconds for
servers whose record nobody touched for ``[scheduler] service_down_time``
seconds (the time after which a silent service counts as gone):

* building/scheduling, no host: the scheduler that took the request is
  gone; the server goes to ERROR saying so (compare-and-swap: a live
  scheduler still placing it makes its claim fail instead, see
  ``Store.claim``). It held no claim.
* building/spawning on a host: the build is cast again. Builds are
  idempotent by UUID on the agent: an existing domain is reported as it
  is, a missing one is built; either way the server settles.
* deleting: the delete is cast again (idempotent too).

A server is cast again at most once per scheduler process, so a slow
build is not flooded. Several schedulers may sweep the same database:
failing is compare-and-swap, and a repeated cast changes nothing.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select, update

from compute_driver import exception, service
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.models import Instance, utcnow
from compute_driver.scheduler.store import Store

LOG = logging.getLogger(__name__)

#: The fault of a server whose scheduler went away before placing it.
SCHEDULING_LOST = (
    "scheduling was interrupted: the scheduler that took the request stopped "
    "before placing it; delete the server and create it again"
)
#: At most this many servers of each kind are handled per sweep.
BATCH = 500


class Compute(Protocol):
    """The casts the sweep sends (compute_driver.rpc.compute_api.ComputeAPI has them)."""

    def build_instance(self, host: str, instance: dict[str, Any]) -> None: ...

    def delete_instance(self, host: str, uuid: str) -> None: ...


@dataclass
class SweepResult:
    """What one sweep did, by server UUID."""

    failed: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    redeleted: list[str] = field(default_factory=list)


class InFlightRecovery:
    """Finds servers stuck in flight and settles them (see the module docstring).

    :param build_payload: ``(uuid, image record) -> payload`` of ``build_instance``.
    :param grace: seconds a record must be untouched before it counts as stuck.
    """

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        compute: Compute,
        build_payload: Callable[[str, dict[str, Any]], dict[str, Any]],
        grace: float,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.compute = compute
        self.build_payload = build_payload
        self.grace = grace
        self._cast_again: set[str] = set()

    def sweep(self, now: datetime.datetime | None = None) -> SweepResult:
        """One pass over the store; errors of one server never stop the others."""
        cutoff = (now or utcnow()) - datetime.timedelta(seconds=self.grace)
        result = SweepResult()
        for uuid in self._stuck(cutoff, "scheduling"):
            if self._fail_unplaced(uuid, cutoff):
                LOG.warning("Server %s: %s", uuid, SCHEDULING_LOST)
                result.failed.append(uuid)
        for uuid, host, image in self._stuck(cutoff, "spawning"):
            if self._recast(uuid, "build", self._rebuild, uuid, host, image):
                result.rebuilt.append(uuid)
        for uuid, host, _image in self._stuck(cutoff, "deleting"):
            if self._recast(uuid, "delete", self.compute.delete_instance, host, uuid):
                result.redeleted.append(uuid)
        return result

    def _stuck(self, cutoff: datetime.datetime, task: str) -> list[Any]:
        placed = task != "scheduling"
        query = (
            select(Instance.uuid, Instance.host, Instance.image_uuid)
            if placed
            else select(Instance.uuid)
        )
        query = query.where(
            Instance.deleted.is_(False),
            Instance.task_state == task,
            Instance.updated_at < cutoff,
            Instance.host.is_not(None) if placed else Instance.host.is_(None),
        )
        if task != "deleting":
            query = query.where(Instance.vm_state == "building")
        with self.db.session() as session:
            rows = session.execute(query.order_by(Instance.updated_at).limit(BATCH)).all()
        if not placed:
            return [row.uuid for row in rows]
        return [
            (row.uuid, row.host, row.image_uuid) for row in rows if row.uuid not in self._cast_again
        ]

    def _fail_unplaced(self, uuid: str, cutoff: datetime.datetime) -> bool:
        """ERROR, only if the server is still unplaced and untouched (no claim to release)."""
        with self.db.session() as session:
            result = session.execute(
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.deleted.is_(False),
                    Instance.vm_state == "building",
                    Instance.task_state == "scheduling",
                    Instance.host.is_(None),
                    Instance.updated_at < cutoff,
                )
                .values(
                    vm_state="error", task_state=None, fault=SCHEDULING_LOST, updated_at=utcnow()
                )
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def _rebuild(self, uuid: str, host: str, image_uuid: str) -> None:
        image = self.catalog.get_image(image_uuid)
        self.compute.build_instance(host, self.build_payload(uuid, image))

    def _recast(self, uuid: str, what: str, cast: Callable[..., None], *args: str) -> bool:
        self._cast_again.add(uuid)
        try:
            cast(*args)
        except exception.ComputeDriverError as exc:
            # NOTE: not retried by this scheduler: the agent's own reconcile
            # settles it when the agent (or the bus) is back.
            LOG.error("Server %s is stuck; casting its %s again failed: %s", uuid, what, exc)
            return False
        LOG.warning("Server %s was left in flight; its %s is cast again", uuid, what)
        return True


class _Service(Protocol):
    conf: Any
    store: Store
    scheduler: Any
    periodic: service.Periodic


def start(svc: _Service) -> service.Periodic:
    """Start sweeping for ``svc`` (a SchedulerService); it stops with its periodic checks."""
    recovery = InFlightRecovery(
        svc.store.db,
        svc.scheduler.catalog,
        svc.scheduler.compute,
        # NOTE: the build path's payload builder, so a re-cast build carries
        # exactly what the first one did (bar root_clone, which is not stored).
        svc.scheduler.build.build_payload,
        svc.conf.scheduler.service_down_time,
    )
    sweeper = service.Periodic(
        "recover-in-flight", svc.conf.scheduler.periodic_interval, _quiet(recovery)
    )
    # NOTE: shares the stop event of the service's periodic checks, so that
    # SchedulerService.stop() stops this thread too without another line there.
    sweeper.stopped = svc.periodic.stopped
    sweeper.start()
    return sweeper


def _quiet(recovery: InFlightRecovery) -> Callable[[], None]:
    def sweep() -> None:
        result = recovery.sweep()
        if result.failed or result.rebuilt or result.redeleted:
            LOG.info(
                "In-flight recovery: %d failed, %d builds and %d deletes cast again",
                len(result.failed),
                len(result.rebuilt),
                len(result.redeleted),
            )

    return sweep
