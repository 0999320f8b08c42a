"""The scheduler's SQL store: every read and write of its tables.

Everything a scheduler restart must not forget lives here. Rows leave as
plain dicts with stable keys (the shapes the RPC API returns), so no ORM
object escapes a session. The steps every server create takes (flavor and
image, insert, claim, the agent's report) run prebuilt Core statements on a
bare connection: a Session's unit of work cost more than their SQL.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
import types
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from compute_driver import exception
from compute_driver.scheduler.models import Flavor, Host, Image, Instance, Port, Volume, utcnow

LOG = logging.getLogger(__name__)

#: Marks a disable made by an agent, which that agent may lift again.
AUTO_DISABLED_PREFIX = "AUTO: "

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")


def _iso(value: datetime.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def host_dict(host: Host, down_after: int) -> dict[str, Any]:
    """The public shape of a host; ``state`` is up or down from its last report."""
    now = utcnow()
    up = host.reported_at is not None and (now - host.reported_at).total_seconds() <= down_after
    return {
        "name": host.name,
        "state": "up" if up else "down",
        "enabled": host.enabled,
        "disabled_reason": host.disabled_reason,
        "vcpus": host.vcpus,
        "vcpus_used": host.vcpus_used,
        "memory_mb": host.memory_mb,
        "memory_mb_used": host.memory_mb_used,
        "disk_gb": host.disk_gb,
        "disk_gb_used": host.disk_gb_used,
        "capabilities": dict(host.capabilities or {}),
        "failed_builds": host.failed_builds or 0,
        "reported_at": _iso(host.reported_at),
    }


def flavor_dict(flavor: Flavor | sa.Row) -> dict[str, Any]:
    """The public shape of a flavor."""
    return {
        "name": flavor.name,
        "vcpus": flavor.vcpus,
        "memory_mb": flavor.memory_mb,
        "root_gb": flavor.root_gb,
        "extra_specs": dict(flavor.extra_specs or {}),
    }


def image_dict(image: Image | sa.Row) -> dict[str, Any]:
    """The public shape of an image."""
    return {
        "uuid": image.uuid,
        "name": image.name,
        "disk_format": image.disk_format,
        "path": image.path,
        "size_bytes": image.size_bytes,
        "virtual_size": image.virtual_size,
        "checksum": image.checksum,
        "kernel_path": image.kernel_path,
        "initrd_path": image.initrd_path,
        "cmdline": image.cmdline,
        "properties": dict(image.properties or {}),
        "created_at": _iso(image.created_at),
    }


def instance_dict(instance: Any) -> dict[str, Any]:
    """The public shape of a server (user data is never echoed back), from
    an Instance, a row of :data:`_LISTED_COLUMNS` or any object with their
    attributes."""
    return {
        "uuid": instance.uuid,
        "name": instance.name,
        "project": instance.project,
        "flavor": instance.flavor_name,
        "vcpus": instance.vcpus,
        "memory_mb": instance.memory_mb,
        "root_gb": instance.root_gb,
        "extra_specs": dict(instance.extra_specs or {}),
        "image": instance.image_uuid,
        "host": instance.host,
        "vm_state": instance.vm_state,
        "task_state": instance.task_state,
        "power_state": instance.power_state,
        "fault": instance.fault,
        "root_backend": instance.root_backend,
        "root_clone": instance.root_clone or "linked",
        "attempts": list(instance.attempts or []),
        "availability_zone": instance.availability_zone,
        "group": instance.group_uuid,
        "created_at": _iso(instance.created_at),
        "updated_at": _iso(instance.updated_at),
    }


#: What instance_dict reads of an instance, for listings.
_LISTED_COLUMNS = (
    Instance.uuid,
    Instance.name,
    Instance.project,
    Instance.flavor_name,
    Instance.vcpus,
    Instance.memory_mb,
    Instance.root_gb,
    Instance.extra_specs,
    Instance.image_uuid,
    Instance.host,
    Instance.vm_state,
    Instance.task_state,
    Instance.power_state,
    Instance.fault,
    Instance.root_backend,
    Instance.root_clone,
    Instance.attempts,
    Instance.availability_zone,
    Instance.group_uuid,
    Instance.created_at,
    Instance.updated_at,
)


#: A server's listed columns and whether it is deleted, by uuid.
_INSTANCE_BY_UUID = select(*_LISTED_COLUMNS, Instance.deleted).where(
    Instance.uuid == sa.bindparam("uuid")
)
#: A flavor, by name.
_FLAVOR_BY_NAME = select(*Flavor.__table__.c).where(Flavor.name == sa.bindparam("flavor"))
#: An image by uuid or (unique) name; a uuid match wins.
_IMAGE_BY_REF = (
    select(*Image.__table__.c)
    .where(sa.or_(Image.uuid == sa.bindparam("image"), Image.name == sa.bindparam("image")))
    .order_by((Image.uuid == sa.bindparam("image")).desc())
    .limit(1)
)
#: A new server; the values given name its columns.
_INSERT_INSTANCE = sa.insert(Instance)
#: A server's columns, by uuid; the SET clause is the columns the parameters name.
_UPDATE_INSTANCE = update(Instance).where(Instance.uuid == sa.bindparam("by_uuid"))
#: A build ended on a host: its failed-builds count starts again.
_RESET_FAILED_BUILDS = (
    update(Host)
    .where(Host.name == sa.bindparam("host"), Host.failed_builds != 0)
    .values(failed_builds=0)
)

# NOTE: a claim's two UPDATEs are built once, with bound parameters: building
# and caching a statement per claim was a fifth of the scheduler's CPU.
_CLAIM_HOST = (
    update(Host)
    .where(
        Host.name == sa.bindparam("claim_host"),
        Host.enabled.is_(True),
        Host.vcpus_used + sa.bindparam("claim_vcpus")
        <= Host.vcpus * sa.bindparam("claim_cpu_ratio"),
        Host.memory_mb_used + sa.bindparam("claim_memory_mb")
        <= (Host.memory_mb - sa.bindparam("claim_reserved_mb")) * sa.bindparam("claim_ram_ratio"),
        Host.disk_gb_used + sa.bindparam("claim_disk_gb")
        <= Host.disk_gb * sa.bindparam("claim_disk_ratio"),
    )
    .values(
        vcpus_used=Host.vcpus_used + sa.bindparam("claim_vcpus"),
        memory_mb_used=Host.memory_mb_used + sa.bindparam("claim_memory_mb"),
        disk_gb_used=Host.disk_gb_used + sa.bindparam("claim_disk_gb"),
    )
    .execution_options(synchronize_session=False)
)
_PLACE_INSTANCE = (
    update(Instance)
    .where(
        Instance.uuid == sa.bindparam("claim_uuid"),
        Instance.deleted.is_(False),
        Instance.vm_state == "building",
        Instance.task_state == "scheduling",
        Instance.host.is_(None),
    )
    .values(
        host=sa.bindparam("claim_host"),
        task_state="spawning",
        claimed=True,
        updated_at=sa.bindparam("claim_now"),
    )
    .execution_options(synchronize_session=False)
)


class Store:
    """Access to the scheduler database at one SQLAlchemy URL."""

    def __init__(self, url: str, busy_timeout: int = 30) -> None:
        self.url = url
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"timeout": busy_timeout, "check_same_thread": False}
            path = sa.engine.make_url(url).database
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.engine = sa.create_engine(url, connect_args=connect_args, future=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # NOTE: SQLite takes one writer at a time, and a writer that finds
        # the file locked sleeps in SQLite's busy handler (1, 2, 5, 10 ...
        # 100 ms) instead of waking when the lock is free: with a dozen RPC
        # threads writing, the scheduler idled in those sleeps. Our own
        # threads queue on a lock instead; the busy timeout is left for
        # other processes.
        self._turn: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if url.startswith("sqlite") else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with self._turn, self._sessions.begin() as session:
            yield session

    @contextlib.contextmanager
    def connection(self) -> Iterator[sa.Connection]:
        """A transaction on a bare connection, for Core statements: committed
        on success, rolled back on any error."""
        with self._turn, self.engine.begin() as connection:
            yield connection

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        config = AlembicConfig()
        config.set_main_option("script_location", MIGRATIONS)
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            alembic_command.upgrade(config, "head")

    # --- hosts -------------------------------------------------------------

    def report_host(
        self, name: str, resources: dict[str, int], capabilities: dict[str, Any]
    ) -> bool:
        """Record an agent's report; returns True when the host is new."""
        with self.session() as session:
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
        with self.session() as session:
            host = session.get(Host, name)
            if host is None:
                raise exception.HostNotFound(host=name)
            return host_dict(host, down_after)

    def list_hosts(self, down_after: int) -> list[dict[str, Any]]:
        with self.session() as session:
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
        with self.session() as session:
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
        with self.connection() as connection:
            result = connection.execute(_CLAIM_HOST, params)
            if _rowcount(result) != 1:
                return False
            # NOTE: the server must still be waiting for a host. A delete
            # (begin_delete deletes an unplaced server at once) or the
            # in-flight recovery (recovery.py fails one whose scheduler went
            # away) may have settled it since create_server stored it; a
            # claim for it then would never be released. Raising rolls the
            # host's claim back with this transaction.
            placed = connection.execute(_PLACE_INSTANCE, params)
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

    # --- flavors -----------------------------------------------------------

    def list_flavors(self) -> list[dict[str, Any]]:
        with self.session() as session:
            return [
                flavor_dict(f) for f in session.scalars(select(Flavor).order_by(Flavor.memory_mb))
            ]

    def get_flavor(self, name: str) -> dict[str, Any]:
        with self.session() as session:
            flavor = session.get(Flavor, name)
            if flavor is None:
                raise exception.FlavorNotFound(flavor=name)
            return flavor_dict(flavor)

    def create_flavor(
        self,
        name: str,
        vcpus: int,
        memory_mb: int,
        root_gb: int,
        extra_specs: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        with self.session() as session:
            existing = session.get(Flavor, name)
            if existing is not None:
                same = (
                    existing.vcpus,
                    existing.memory_mb,
                    existing.root_gb,
                    dict(existing.extra_specs or {}),
                ) == (vcpus, memory_mb, root_gb, extra_specs or {})
                if same:
                    return flavor_dict(existing)  # a repeated create changes nothing
                raise exception.DuplicateName(what="Flavor", name=name)
            flavor = Flavor(
                name=name,
                vcpus=vcpus,
                memory_mb=memory_mb,
                root_gb=root_gb,
                extra_specs=extra_specs or {},
            )
            session.add(flavor)
            return flavor_dict(flavor)

    def delete_flavor(self, name: str) -> None:
        with self.session() as session:
            flavor = session.get(Flavor, name)
            if flavor is None:
                raise exception.FlavorNotFound(flavor=name)
            session.delete(flavor)

    # --- images ------------------------------------------------------------

    def _find_image(self, session: Session, ref: str) -> Image:
        image = session.get(Image, ref) or session.scalar(select(Image).where(Image.name == ref))
        if image is None:
            raise exception.ImageNotFound(image=ref)
        return image

    def get_image(self, ref: str) -> dict[str, Any]:
        with self.session() as session:
            return image_dict(self._find_image(session, ref))

    def get_flavor_and_image(
        self, flavor: str, image: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A create's flavor and image, read in one transaction.

        :raises FlavorNotFound: / :raises ImageNotFound:
        """
        with self.connection() as connection:
            flavor_row = connection.execute(_FLAVOR_BY_NAME, {"flavor": flavor}).first()
            if flavor_row is None:
                raise exception.FlavorNotFound(flavor=flavor)
            image_row = connection.execute(_IMAGE_BY_REF, {"image": image}).first()
            if image_row is None:
                raise exception.ImageNotFound(image=image)
            return flavor_dict(flavor_row), image_dict(image_row)

    def find_image_by_name(self, name: str) -> dict[str, Any] | None:
        with self.session() as session:
            image = session.scalar(select(Image).where(Image.name == name))
            return image_dict(image) if image else None

    def list_images(self) -> list[dict[str, Any]]:
        with self.session() as session:
            return [image_dict(i) for i in session.scalars(select(Image).order_by(Image.name))]

    def create_image(self, **fields: Any) -> dict[str, Any]:
        with self.session() as session:
            if session.scalar(select(Image).where(Image.name == fields["name"])) is not None:
                raise exception.DuplicateName(what="Image", name=fields["name"])
            image = Image(**fields)
            session.add(image)
            session.flush()
            return image_dict(image)

    def delete_image(self, ref: str) -> dict[str, Any]:
        """Remove an image record; refused while a live server uses it."""
        with self.session() as session:
            image = self._find_image(session, ref)
            users = session.scalars(
                select(Instance.name).where(
                    Instance.image_uuid == image.uuid, Instance.deleted.is_(False)
                )
            ).all()
            if users:
                raise exception.InUse(
                    what="Image",
                    name=image.name,
                    reason="used by server(s) %s" % ", ".join(users[:5]),
                )
            gone = image_dict(image)
            session.delete(image)
            return gone

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
        with self.connection() as connection:
            existing = connection.execute(_INSTANCE_BY_UUID, {"uuid": fields["uuid"]}).first()
            if existing is not None:
                return instance_dict(existing), False
            connection.execute(_INSERT_INSTANCE, values)
        # NOTE: a column not given has its default, which instance_dict reads
        # None as (no extra specs, no attempts, a linked clone...).
        listed = dict.fromkeys(column.key for column in _LISTED_COLUMNS)
        return instance_dict(types.SimpleNamespace(**{**listed, **values})), True

    def _find_instance(self, session: Session, ref: str, include_deleted: bool = False) -> Instance:
        instance = find_by_ref(
            session, Instance, ref, Instance.name, "servers", Instance.deleted.is_(False)
        )
        if instance is None or (instance.deleted and not include_deleted):
            raise exception.InstanceNotFound(instance=ref)
        return instance

    def get_instance(self, ref: str, include_deleted: bool = False) -> dict[str, Any]:
        with self.session() as session:
            return instance_dict(self._find_instance(session, ref, include_deleted))

    def get_instance_user_data(self, uuid: str) -> str | None:
        with self.session() as session:
            return self._find_instance(session, uuid, include_deleted=True).user_data

    def is_deleted(self, uuid: str) -> bool:
        with self.session() as session:
            instance = session.get(Instance, uuid)
            return instance is not None and instance.deleted

    def list_instances(
        self, project: str | None = None, host: str | None = None
    ) -> list[dict[str, Any]]:
        # NOTE: the columns of instance_dict only, as rows, not ORM objects:
        # a listing of thousands of servers loads no user data and builds
        # no identity map (a third of its cost).
        with self.session() as session:
            query = (
                select(*_LISTED_COLUMNS)
                .where(Instance.deleted.is_(False))
                .order_by(Instance.created_at)
            )
            if project:
                query = query.where(Instance.project == project)
            if host:
                query = query.where(Instance.host == host)
            return [instance_dict(row) for row in session.execute(query)]

    def update_instance(self, uuid: str, expected_host: str | None = None, **values: Any) -> bool:
        """Set fields of a live server; False when it is deleted or elsewhere."""
        with self.session() as session:
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

    def begin_task(self, ref: str, allowed_states: frozenset[str], task: str) -> dict[str, Any]:
        """Compare-and-swap a server into ``task``.

        :raises InstanceStateConflict: another task is in flight, or the
            server's state does not allow this one (nothing is changed).
        """
        with self.session() as session:
            instance = self._find_instance(session, ref)
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
        with self.session() as session:
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
        with self.session() as session:
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
        with self.session() as session:
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
        with self.connection() as connection:
            row = connection.execute(_INSTANCE_BY_UUID, {"uuid": uuid}).first()
            if row is None or row.deleted or row.host != host or row.vm_state == "error":
                return None
            before, built = row.vm_state, row.task_state == "spawning"
            if built:
                connection.execute(_RESET_FAILED_BUILDS, {"host": host})
            values["updated_at"] = utcnow()
            connection.execute(_UPDATE_INSTANCE, {"by_uuid": uuid, **values})
        record = instance_dict(row)
        record.update(values, updated_at=_iso(values["updated_at"]))
        return before, record, built

    def power_changed(self, uuid: str, host: str, power_state: str, vm_state: str) -> bool:
        """Follow a guest's own power change, unless a task of ours is in flight.

        :returns: True when the record changed.
        """
        with self.session() as session:
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
        with self.session() as session:
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

    def begin_delete(self, ref: str) -> tuple[dict[str, Any], bool]:
        """Start deleting a server.

        :returns: (record, needs_agent): needs_agent is False when the server
            never reached a host and is deleted at once, or was deleted before.
        """
        with self.session() as session:
            instance = self._find_instance(session, ref, include_deleted=True)
            if instance.deleted:
                return instance_dict(instance), False
            if not instance.host:
                self._mark_deleted(session, instance)
                return instance_dict(instance), False
            instance.task_state = "deleting"
            return instance_dict(instance), True

    def finish_delete(self, uuid: str, host: str) -> bool:
        """The agent on ``host`` removed the server: release and soft-delete it."""
        with self.session() as session:
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


def find_by_ref(
    session: Session,
    model: Any,
    ref: str,
    name_column: Any,
    plural: str,
    live: Any = None,
) -> Any:
    """The row of ``model`` whose key is ``ref``, else the one live row named ``ref``.

    :param live: an extra condition for the lookup by name (e.g. not deleted).
    :returns: the row, or None.
    :raises Conflict: several rows have that name (the caller must use the key).
    """
    row = session.get(model, ref)
    if row is not None:
        return row
    query = select(model).where(name_column == ref)
    if live is not None:
        query = query.where(live)
    matches = session.scalars(query).all()
    if len(matches) > 1:
        raise exception.Conflict(
            reason="%d %s are named %s; use a UUID" % (len(matches), plural, ref)
        )
    return matches[0] if matches else None


def _rowcount(result: Any) -> int:
    """Rows an UPDATE changed (execute() returns a CursorResult for DML)."""
    return int(result.rowcount)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # NOTE: WAL lets readers (list, show) run while a claim writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    # NOTE: in WAL mode NORMAL syncs at checkpoints, not at every commit: a
    # commit survives a crash of any process; only a power cut can lose the
    # last ones (never corrupt the file). One fsync per claim was most of
    # a create's time on a slow disk.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
