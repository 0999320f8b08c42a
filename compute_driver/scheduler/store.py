"""The scheduler's SQL store: every read and write of its tables.

Everything a scheduler restart must not forget lives here. Rows leave as
plain dicts with stable keys (the shapes the RPC API returns), so no ORM
object escapes a session. The steps every server create takes (flavor and
image, insert, claim, the agent's report) run prebuilt Core statements on a
bare connection: a Session's unit of work cost more than their SQL.

Beside it, around the same :class:`Database` (the engine and transactions,
``database.py``): flavors and images (``catalog.py``), volumes
(``volume_store.py``) and networks (``network_store.py``); the rows' public
shapes are in ``records.py``, the prebuilt statements in ``statements.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from compute_driver import exception
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler.database import Database, find_by_ref
from compute_driver.scheduler.models import Host, Instance, Port, Volume, utcnow
from compute_driver.scheduler.records import LISTED_COLUMNS, host_dict, instance_dict, iso
from compute_driver.scheduler.statements import (
    CLAIM_HOST,
    INSERT_INSTANCE,
    INSTANCE_BY_UUID,
    PLACE_INSTANCE,
    RESET_FAILED_BUILDS,
    UPDATE_INSTANCE,
)

LOG = logging.getLogger(__name__)

#: Marks a disable made by an agent, which that agent may lift again.
AUTO_DISABLED_PREFIX = "AUTO: "


class Store:
    """Hosts, claims and servers in the scheduler database."""

    def __init__(self, db: Database) -> None:
        #: The database this store (and the catalog, volume and network
        #: stores beside it) reads and writes.
        self.db = db

    # --- hosts -------------------------------------------------------------

    def report_host(
        self, name: str, resources: dict[str, int], capabilities: dict[str, Any]
    ) -> bool:
        """Record an agent's report; returns True when the host is new."""
        with self.db.session() as session:
            host = session.get(Host, name)
            created = host is None
            if host is None:
                host = Host(name=name, enabled=True, vcpus_used=0, memory_mb_used=0, disk_gb_used=0)
                session.add(host)
            host.vcpus = resources["vcpus"]
            host.memory_mb = resources["memory_mb"]
            host.disk_gb = resources["disk_gb"]
            host.capabilities = capabilities
            host.reported_at = utcnow()
            return created

    def get_host(self, name: str, down_after: int) -> dict[str, Any]:
        with self.db.session() as session:
            host = session.get(Host, name)
            if host is None:
                raise exception.HostNotFound(host=name)
            return host_dict(host, down_after)

    def list_hosts(self, down_after: int) -> list[dict[str, Any]]:
        with self.db.session() as session:
            hosts = session.scalars(select(Host).order_by(Host.name))
            return [host_dict(h, down_after) for h in hosts]

    def set_host_enabled(
        self, name: str, enabled: bool, reason: str | None, automatic: bool, down_after: int
    ) -> dict[str, Any]:
        """Enable or disable a host.

        ``automatic`` changes come from the agent (its hypervisor went away or
        came back). NOTE: they never override an operator: an automatic
        enable only lifts an automatic disable.
        """
        with self.db.session() as session:
            host = session.get(Host, name)
            if host is None:
                raise exception.HostNotFound(host=name)
            auto_disabled = (host.disabled_reason or "").startswith(AUTO_DISABLED_PREFIX)
            if enabled:
                if not automatic or auto_disabled or host.enabled:
                    host.enabled, host.disabled_reason = True, None
            elif not automatic or host.enabled:
                prefix = AUTO_DISABLED_PREFIX if automatic else ""
                host.enabled, host.disabled_reason = False, prefix + (reason or "no reason given")
            return host_dict(host, down_after)

    def claim(
        self,
        host: str,
        vcpus: int,
        memory_mb: int,
        disk_gb: int,
        limits: dict[str, float],
        instance_uuid: str,
    ) -> bool:
        """Atomically claim resources on ``host`` for an instance and place it there.

        The claim is one conditional UPDATE: it succeeds only if the host
        still has room, whatever other schedulers did meanwhile.

        :param limits: ``cpu_ratio``, ``ram_ratio``, ``disk_ratio``, ``reserved_mb``.
        :returns: False when the host has no room, or the server no longer
            waits for a host (deleted or failed meanwhile); nothing was changed.
        """
        try:
            return self._claim(host, vcpus, memory_mb, disk_gb, limits, instance_uuid)
        except _NotWaiting:
            LOG.info("Not placing server %s: it is no longer waiting for a host", instance_uuid)
            return False

    def _claim(
        self,
        host: str,
        vcpus: int,
        memory_mb: int,
        disk_gb: int,
        limits: dict[str, float],
        instance_uuid: str,
    ) -> bool:
        params: dict[str, Any] = {
            "claim_host": host,
            "claim_uuid": instance_uuid,
            "claim_vcpus": vcpus,
            "claim_memory_mb": memory_mb,
            "claim_disk_gb": disk_gb,
            "claim_now": utcnow(),
            **{"claim_" + k: v for k, v in limits.items()},
        }
        with self.db.connection() as connection:
            result = connection.execute(CLAIM_HOST, params)
            if _rowcount(result) != 1:
                return False
            # NOTE: the server must still be waiting for a host. A delete
            # (begin_delete deletes an unplaced server at once) or the
            # in-flight recovery (recovery.py fails one whose scheduler went
            # away) may have settled it since create_server stored it; a
            # claim for it then would never be released. Raising rolls the
            # host's claim back with this transaction.
            placed = connection.execute(PLACE_INSTANCE, params)
            if _rowcount(placed) != 1:
                raise _NotWaiting()
            return True

    @staticmethod
    def _release(session: Session, instance: Instance) -> None:
        # NOTE: compare-and-swap on the instance's claimed flag first: of two
        # releases racing (a failure report and a delete, or a resent one),
        # exactly one finds it set, and only that one gives the resources
        # back. The ORM row may be stale; the UPDATE's condition is not.
        if not instance.host:
            return
        flipped = session.execute(
            update(Instance)
            .where(Instance.uuid == instance.uuid, Instance.claimed.is_(True))
            .values(claimed=False)
            .execution_options(synchronize_session=False)
        )
        instance.claimed = False
        if _rowcount(flipped) != 1:
            return
        session.execute(
            update(Host)
            .where(Host.name == instance.host)
            .values(
                vcpus_used=Host.vcpus_used - instance.vcpus,
                memory_mb_used=Host.memory_mb_used - instance.memory_mb,
                disk_gb_used=Host.disk_gb_used - instance.root_gb,
            )
            .execution_options(synchronize_session=False)
        )

    # --- instances ---------------------------------------------------------

    def create_instance(self, **fields: Any) -> tuple[dict[str, Any], bool]:
        """Insert a server unless its uuid exists.

        :returns: (the record, True if it was created now).
        """
        now = utcnow()
        values = {
            **fields,
            "vm_state": "building",
            "task_state": "scheduling",
            "power_state": "nostate",
            "claimed": False,
            "deleted": False,
            "created_at": now,
            "updated_at": now,
        }
        with self.db.connection() as connection:
            existing = connection.execute(INSTANCE_BY_UUID, {"uuid": fields["uuid"]}).first()
            if existing is not None:
                return instance_dict(existing), False
            connection.execute(INSERT_INSTANCE, values)
        # NOTE: a column not given has its default, which instance_dict reads
        # None as (no extra specs, no attempts, a linked clone...).
        return instance_dict(values), True

    def _find_instance(
        self,
        session: Session,
        ref: str,
        include_deleted: bool = False,
        context: RequestContext | None = None,
    ) -> Instance:
        instance = find_by_ref(
            session, Instance, ref, Instance.name, "servers", Instance.deleted.is_(False), context
        )
        if instance is None or (instance.deleted and not include_deleted):
            raise exception.InstanceNotFound(instance=ref)
        return instance

    def get_instance(
        self, ref: str, include_deleted: bool = False, context: RequestContext | None = None
    ) -> dict[str, Any]:
        """The server ``ref`` names, as ``context`` sees it (see scope.py).

        :raises InstanceNotFound: none, or another project's.
        """
        with self.db.session() as session:
            return instance_dict(self._find_instance(session, ref, include_deleted, context))

    def get_instance_user_data(self, uuid: str) -> str | None:
        with self.db.session() as session:
            return self._find_instance(session, uuid, include_deleted=True).user_data

    def is_deleted(self, uuid: str) -> bool:
        with self.db.session() as session:
            instance = session.get(Instance, uuid)
            return instance is not None and instance.deleted

    def list_instances(
        self, project: str | None = None, host: str | None = None
    ) -> list[dict[str, Any]]:
        # NOTE: the columns of instance_dict only, as rows on a bare
        # connection, not ORM objects: a listing of thousands of servers
        # loads no user data, builds no identity map and skips the ORM's
        # result processing (together two thirds of its cost).
        query = (
            select(*LISTED_COLUMNS).where(Instance.deleted.is_(False)).order_by(Instance.created_at)
        )
        if project:
            query = query.where(Instance.project == project)
        if host:
            query = query.where(Instance.host == host)
        with self.db.connection() as connection:
            return [instance_dict(row) for row in connection.execute(query)]

    def update_instance(self, uuid: str, expected_host: str | None = None, **values: Any) -> bool:
        """Set fields of a live server; False when it is deleted or elsewhere."""
        with self.db.session() as session:
            instance = session.get(Instance, uuid)
            if instance is None or instance.deleted:
                return False
            if expected_host is not None and instance.host != expected_host:
                return False
            if instance.vm_state == "error":
                # NOTE: ERROR released the claim (fail_instance); a late
                # report must not bring the server back without one.
                return False
            for key, value in values.items():
                setattr(instance, key, value)
            return True

    def begin_task(
        self,
        ref: str,
        allowed_states: frozenset[str],
        task: str,
        context: RequestContext | None = None,
    ) -> dict[str, Any]:
        """Compare-and-swap a server (as ``context`` sees it) into ``task``.

        :raises InstanceStateConflict: another task is in flight, or the
            server's state does not allow this one (nothing is changed).
        """
        with self.db.session() as session:
            instance = self._find_instance(session, ref, context=context)
            result = session.execute(
                update(Instance)
                .where(
                    Instance.uuid == instance.uuid,
                    Instance.deleted.is_(False),
                    Instance.task_state.is_(None),
                    Instance.vm_state.in_(sorted(allowed_states)),
                )
                .values(task_state=task, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) != 1:
                session.refresh(instance)
                if instance.task_state:
                    reason = "task %s is in flight" % instance.task_state
                else:
                    reason = "%s needs the server to be %s" % (
                        task,
                        " or ".join(sorted(allowed_states)),
                    )
                raise exception.InstanceStateConflict(
                    instance=instance.name, state=instance.vm_state, reason=reason
                )
            session.refresh(instance)
            return instance_dict(instance)

    def fail_instance(self, uuid: str, fault: str, expected_host: str | None = None) -> None:
        """Mark a server ERROR with ``fault`` and release its claim.

        The host is kept on the record (the agent may still hold debris to
        delete), but it no longer counts against the host's capacity.

        :param expected_host: only if the server is (still) on this host: a
            late report of a host it was moved away from changes nothing.
        """
        with self.db.session() as session:
            instance = session.get(Instance, uuid)
            if instance is None or instance.deleted:
                return
            if expected_host is not None and instance.host != expected_host:
                return
            self._release(session, instance)
            instance.vm_state = "error"
            instance.task_state = None
            instance.fault = fault[:1024]

    def requeue_failed_build(
        self, uuid: str, host: str, fault: str, max_attempts: int
    ) -> tuple[dict[str, Any], bool] | None:
        """A build failed on ``host``: record the attempt and release the claim.

        Below ``max_attempts`` the server waits for a host again (``scheduling``,
        no host); at the limit it goes to ERROR with every attempt's reason.
        The host's ``failed_builds`` counter goes up either way.

        :returns: (the record, True if it waits for another host), or None
            when the server is not building on ``host`` (deleted, moved on, or
            a failed action rather than a build).
        """
        with self.db.session() as session:
            instance = session.get(Instance, uuid)
            if (
                instance is None
                or instance.deleted
                or instance.host != host
                or instance.task_state != "spawning"
            ):
                return None
            attempts = list(instance.attempts or []) + [{"host": host, "fault": fault[:300]}]
            instance.attempts = attempts
            session.execute(
                update(Host)
                .where(Host.name == host)
                .values(failed_builds=Host.failed_builds + 1)
                .execution_options(synchronize_session=False)
            )
            self._release(session, instance)
            if len(attempts) >= max_attempts:
                instance.vm_state = "error"
                instance.task_state = None
                instance.fault = (
                    "build failed on %d host(s): " % len(attempts)
                    + "; ".join("%s: %s" % (a["host"], a["fault"]) for a in attempts)
                )[:1024]
                return instance_dict(instance), False
            instance.host = None
            instance.task_state = "scheduling"
            return instance_dict(instance), True

    def undo_claim(self, uuid: str, host: str) -> None:
        """Take back a claim just made on ``host``: the server waits for a host again."""
        with self.db.session() as session:
            instance = session.get(Instance, uuid)
            if instance is None or instance.host != host or instance.task_state != "spawning":
                return
            self._release(session, instance)
            instance.host = None
            instance.task_state = "scheduling"

    def report_state(
        self,
        uuid: str,
        host: str,
        vm_state: str,
        fault: str | None,
        power_state: str | None = None,
    ) -> tuple[str, dict[str, Any], bool] | None:
        """An agent reports a live server's state: one transaction for the lot.

        Ends any task of the server, and a build (``spawning``) on ``host``,
        whose failed-builds counter then starts again.

        :param fault: what went wrong in an action the server survived
            (None clears the last one).
        :param power_state: None leaves it as it is.
        :returns: (the vm_state before, the record after, whether a build
            ended), or None when the server is unknown, deleted, elsewhere or
            in ERROR (a late report must not bring it back without a claim).
        """
        values: dict[str, Any] = {"vm_state": vm_state, "task_state": None, "fault": fault}
        if power_state is not None:
            values["power_state"] = power_state
        with self.db.connection() as connection:
            row = connection.execute(INSTANCE_BY_UUID, {"uuid": uuid}).first()
            if row is None or row.deleted or row.host != host or row.vm_state == "error":
                return None
            before, built = row.vm_state, row.task_state == "spawning"
            if built:
                connection.execute(RESET_FAILED_BUILDS, {"host": host})
            values["updated_at"] = utcnow()
            connection.execute(UPDATE_INSTANCE, {"by_uuid": uuid, **values})
        record = instance_dict(row)
        record.update(values, updated_at=iso(values["updated_at"]))
        return before, record, built

    def power_changed(self, uuid: str, host: str, power_state: str, vm_state: str) -> bool:
        """Follow a guest's own power change, unless a task of ours is in flight.

        :returns: True when the record changed.
        """
        with self.db.session() as session:
            result = session.execute(
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.host == host,
                    Instance.deleted.is_(False),
                    Instance.task_state.is_(None),
                    Instance.vm_state != "error",
                    sa.or_(Instance.power_state != power_state, Instance.vm_state != vm_state),
                )
                .values(power_state=power_state, vm_state=vm_state, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result) == 1

    def set_power_states(self, host: str, states: dict[str, str]) -> None:
        """Record the power states an agent reported for its instances."""
        if not states:
            return
        with self.db.session() as session:
            instances = session.scalars(
                select(Instance).where(
                    Instance.host == host,
                    Instance.deleted.is_(False),
                    Instance.uuid.in_(list(states)),
                )
            )
            for instance in instances:
                if instance.power_state != states[instance.uuid]:
                    instance.power_state = states[instance.uuid]

    def begin_delete(
        self, ref: str, context: RequestContext | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Start deleting a server (as ``context`` sees it).

        :returns: (record, needs_agent): needs_agent is False when the server
            never reached a host and is deleted at once, or was deleted before.
        """
        with self.db.session() as session:
            instance = self._find_instance(session, ref, include_deleted=True, context=context)
            if instance.deleted:
                return instance_dict(instance), False
            if not instance.host:
                self._mark_deleted(session, instance)
                return instance_dict(instance), False
            instance.task_state = "deleting"
            return instance_dict(instance), True

    def finish_delete(self, uuid: str, host: str) -> bool:
        """The agent on ``host`` removed the server: release and soft-delete it."""
        with self.db.session() as session:
            instance = session.get(Instance, uuid)
            if instance is None or instance.deleted or instance.host != host:
                return False
            self._mark_deleted(session, instance)
            return True

    def _mark_deleted(self, session: Session, instance: Instance) -> None:
        self._release(session, instance)
        instance.deleted = True
        instance.deleted_at = utcnow()
        instance.vm_state = "deleted"
        instance.task_state = None
        instance.power_state = "nostate"
        # NOTE: ports go with their server; volumes outlive it: a deleted
        # server's volumes, its boot volume too, become available again.
        session.execute(
            sa.delete(Port)
            .where(Port.instance_uuid == instance.uuid)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Volume)
            .where(Volume.attached_to == instance.uuid, Volume.deleted.is_(False))
            .values(
                status="available",
                attached_to=None,
                target_dev=None,
                boot=False,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )


class _NotWaiting(Exception):
    """A claim's server no longer waits for a host (its transaction is rolled back)."""


def _rowcount(result: Any) -> int:
    """Rows an UPDATE changed (execute() returns a CursorResult for DML)."""
    return int(result.rowcount)
