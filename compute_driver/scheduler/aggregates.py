"""Host aggregates, availability zones and server groups (scheduler API 1.0).

An aggregate is a named set of hosts with properties; an aggregate with an
``availability_zone`` puts its hosts in that zone (a host in no such
aggregate is in ``[scheduler] default_availability_zone``). Flavor extra
specs ``aggregate_instance_extra_specs:KEY=VALUE`` ask for hosts whose
aggregates have that property. A server group keeps its members on one
host (``affinity``) or on different hosts (``anti-affinity``); the ``soft-``
policies only prefer so.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg
from sqlalchemy import delete, func, select

from compute_driver import exception
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler import scope
from compute_driver.scheduler.database import Database, find_by_ref
from compute_driver.scheduler.models import Aggregate, AggregateHost, Host, Instance, ServerGroup
from compute_driver.scheduler.scope import scheduler_method

LOG = logging.getLogger(__name__)

GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")


def _iso(value: datetime.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


class AggregateManager:
    """Serves the aggregate and server-group methods of topic ``scheduler``."""

    target = messaging.Target(version="1.0")

    def __init__(
        self, conf: cfg.ConfigOpts, db: Database, on_change: Callable[[], None] | None = None
    ) -> None:
        """:param on_change: called after each committed change of an aggregate
        (the scheduler's host view reads zones and properties again)."""
        self.conf = conf
        self.db = db
        self._on_change = on_change or (lambda: None)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[Any]:
        """A transaction that changes aggregates; ``on_change`` runs after its commit."""
        with self.db.session() as session:
            yield session
        self._on_change()

    # --- aggregates ------------------------------------------------------------

    def _aggregate(self, session: Any, name: str) -> Aggregate:
        aggregate = session.get(Aggregate, name)
        if aggregate is None:
            raise exception.NotFound(what="Aggregate", name=name)
        return aggregate

    def _aggregate_dict(self, session: Any, aggregate: Aggregate) -> dict[str, Any]:
        hosts = session.scalars(
            select(AggregateHost.host)
            .where(AggregateHost.aggregate == aggregate.name)
            .order_by(AggregateHost.host)
        )
        return {
            "name": aggregate.name,
            "availability_zone": aggregate.availability_zone,
            "properties": dict(aggregate.properties or {}),
            "hosts": list(hosts),
            "created_at": _iso(aggregate.created_at),
        }

    @scheduler_method
    def create_aggregate(
        self, context: RequestContext, name: str, availability_zone: str | None = None
    ) -> dict[str, Any]:
        with self.db.session() as session:
            if session.get(Aggregate, name) is not None:
                raise exception.DuplicateName(what="Aggregate", name=name)
            aggregate = Aggregate(name=name, availability_zone=availability_zone, properties={})
            session.add(aggregate)
            session.flush()
            return self._aggregate_dict(session, aggregate)

    @scheduler_method
    def set_aggregate(
        self,
        context: RequestContext,
        aggregate: str,
        availability_zone: str | None = None,
        no_availability_zone: bool = False,
        properties: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Set (or remove) the zone, and properties (an empty value removes one)."""
        with self._changing() as session:
            record = self._aggregate(session, aggregate)
            if no_availability_zone:
                record.availability_zone = None
            elif availability_zone is not None:
                record.availability_zone = availability_zone
            if properties:
                merged = dict(record.properties or {})
                for key, value in properties.items():
                    if value:
                        merged[key] = value
                    else:
                        merged.pop(key, None)
                record.properties = merged
            session.flush()
            return self._aggregate_dict(session, record)

    @scheduler_method
    def add_aggregate_host(
        self, context: RequestContext, aggregate: str, host: str
    ) -> dict[str, Any]:
        with self._changing() as session:
            record = self._aggregate(session, aggregate)
            if session.get(Host, host) is None:
                raise exception.HostNotFound(host=host)
            if record.availability_zone:
                other = self._zone_conflict(session, host, record)
                if other is not None:
                    raise exception.Conflict(
                        reason="host %s is in zone %s (aggregate %s); a host is in one zone"
                        % (host, other.availability_zone, other.name)
                    )
            if session.get(AggregateHost, (aggregate, host)) is None:
                session.add(AggregateHost(aggregate=aggregate, host=host))
            session.flush()
            return self._aggregate_dict(session, record)

    @staticmethod
    def _zone_conflict(session: Any, host: str, record: Aggregate) -> Aggregate | None:
        for other in session.scalars(
            select(Aggregate)
            .join(AggregateHost, AggregateHost.aggregate == Aggregate.name)
            .where(AggregateHost.host == host, Aggregate.availability_zone.is_not(None))
        ):
            if other.availability_zone != record.availability_zone:
                return other  # type: ignore[no-any-return]
        return None

    @scheduler_method
    def remove_aggregate_host(
        self, context: RequestContext, aggregate: str, host: str
    ) -> dict[str, Any]:
        with self._changing() as session:
            record = self._aggregate(session, aggregate)
            session.execute(
                delete(AggregateHost).where(
                    AggregateHost.aggregate == aggregate, AggregateHost.host == host
                )
            )
            return self._aggregate_dict(session, record)

    @scheduler_method
    def list_aggregates(self, context: RequestContext) -> list[dict[str, Any]]:
        with self.db.session() as session:
            return [
                self._aggregate_dict(session, a)
                for a in session.scalars(select(Aggregate).order_by(Aggregate.name))
            ]

    @scheduler_method
    def show_aggregate(self, context: RequestContext, aggregate: str) -> dict[str, Any]:
        with self.db.session() as session:
            return self._aggregate_dict(session, self._aggregate(session, aggregate))

    @scheduler_method
    def delete_aggregate(self, context: RequestContext, aggregate: str) -> dict[str, Any]:
        with self._changing() as session:
            record = self._aggregate(session, aggregate)
            gone = self._aggregate_dict(session, record)
            session.execute(delete(AggregateHost).where(AggregateHost.aggregate == aggregate))
            session.delete(record)
            return gone

    def annotate(self, hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Host records with ``availability_zone`` and ``aggregate_properties``
        (property -> the values its aggregates give it), for placement."""
        default_zone = self.conf.scheduler.default_availability_zone
        zones: dict[str, str] = {}
        properties: dict[str, dict[str, set[str]]] = {}
        with self.db.session() as session:
            rows = session.execute(
                select(AggregateHost.host, Aggregate.availability_zone, Aggregate.properties).join(
                    Aggregate, Aggregate.name == AggregateHost.aggregate
                )
            ).all()
        for host, zone, props in rows:
            if zone:
                zones[host] = zone
            for key, value in (props or {}).items():
                properties.setdefault(host, {}).setdefault(key, set()).add(value)
        return [
            dict(
                h,
                availability_zone=zones.get(h["name"], default_zone),
                aggregate_properties={
                    k: frozenset(v) for k, v in properties.get(h["name"], {}).items()
                },
            )
            for h in hosts
        ]

    def check_zone(self, zone: str) -> None:
        """:raises NotFound: no aggregate names ``zone`` (and it is not the default)."""
        if zone == self.conf.scheduler.default_availability_zone:
            return
        with self.db.session() as session:
            known = session.scalar(
                select(func.count())
                .select_from(Aggregate)
                .where(Aggregate.availability_zone == zone)
            )
        if not known:
            raise exception.NotFound(what="Availability zone", name=zone)

    # --- server groups -----------------------------------------------------------

    @staticmethod
    def _group_dict(session: Any, group: ServerGroup) -> dict[str, Any]:
        members = session.execute(
            select(Instance.uuid, Instance.host).where(
                Instance.group_uuid == group.uuid, Instance.deleted.is_(False)
            )
        ).all()
        return {
            "uuid": group.uuid,
            "name": group.name,
            "project": group.project,
            "policy": group.policy,
            "members": sorted(m.uuid for m in members),
            "hosts": dict(Counter(m.host for m in members if m.host)),
            "created_at": _iso(group.created_at),
        }

    def _group(self, session: Any, ref: str, context: RequestContext | None = None) -> ServerGroup:
        group = find_by_ref(
            session, ServerGroup, ref, ServerGroup.name, "server groups", None, context
        )
        if group is None:
            raise exception.NotFound(what="Server group", name=ref)
        return group

    @scheduler_method
    def create_server_group(
        self,
        context: RequestContext,
        uuid: str,
        name: str,
        policy: str,
        project: str | None = None,
    ) -> dict[str, Any]:
        project = scope.owner(context, project, "create_server_group")
        with self.db.session() as session:
            existing = session.get(ServerGroup, uuid)
            if existing is not None:
                scope.repeated(context, existing.project, uuid)
                return self._group_dict(session, existing)
            group = ServerGroup(uuid=uuid, name=name, policy=policy, project=project)
            session.add(group)
            session.flush()
            return self._group_dict(session, group)

    @scheduler_method
    def list_server_groups(
        self, context: RequestContext, project: str | None = None, all_projects: bool = False
    ) -> list[dict[str, Any]]:
        project = scope.list_project(context, project, all_projects)
        with self.db.session() as session:
            query = select(ServerGroup).order_by(ServerGroup.created_at)
            if project:
                query = query.where(ServerGroup.project == project)
            return [self._group_dict(session, g) for g in session.scalars(query)]

    @scheduler_method
    def show_server_group(self, context: RequestContext, group: str) -> dict[str, Any]:
        with self.db.session() as session:
            return self._group_dict(session, self._group(session, group, context))

    @scheduler_method
    def delete_server_group(self, context: RequestContext, group: str) -> dict[str, Any]:
        with self.db.session() as session:
            record = self._group(session, group, context)
            gone = self._group_dict(session, record)
            if gone["members"]:
                raise exception.InUse(
                    what="Server group",
                    name=record.name,
                    reason="%d server(s) in it" % len(gone["members"]),
                )
            session.delete(record)
            return gone

    def group_for(
        self, ref: str, project: str, context: RequestContext | None = None
    ) -> dict[str, Any]:
        """The group a new server of ``project`` joins (as ``context`` sees it).

        :raises NotFound, ProjectMismatch: no such group, or another project's.
        """
        with self.db.session() as session:
            group = self._group_dict(session, self._group(session, ref, context))
        if group["project"] != project:
            raise exception.ProjectMismatch(
                what="Server group", name=group["name"], instance="of project %s" % project
            )
        return group

    def members_on(self, group_uuid: str, host: str, other_than: str) -> int:
        """Live members of a group on ``host``, ``other_than`` left out (the late check)."""
        with self.db.session() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Instance)
                    .where(
                        Instance.group_uuid == group_uuid,
                        Instance.host == host,
                        Instance.deleted.is_(False),
                        Instance.uuid != other_than,
                    )
                )
                or 0
            )
