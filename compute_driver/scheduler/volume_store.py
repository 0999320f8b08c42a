"""The scheduler's volume records: every read and write of the ``volumes`` table.

A volume's ``status`` is its state machine; every change of it is one
conditional UPDATE (compare-and-swap), so two callers can never both attach,
detach or delete the same volume::

    creating -> available | error
    available -> attaching -> in-use          (back to available on failure)
    in-use -> detaching -> available          (back to in-use on failure)
    available | in-use -> resizing | snapshotting -> where it was
    available | error -> deleting -> (soft-deleted)
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from compute_driver import exception
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler.database import Database, find_by_ref
from compute_driver.scheduler.models import Instance, Volume, utcnow

#: Statuses in which no operation is in flight.
SETTLED = frozenset({"available", "in-use", "error"})


def _iso(value: datetime.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def volume_dict(volume: Volume) -> dict[str, Any]:
    """The public shape of a volume."""
    return {
        "uuid": volume.uuid,
        "name": volume.name,
        "project": volume.project,
        "size_gb": volume.size_gb,
        "backend": volume.backend,
        "shared": volume.shared,
        "image": volume.image_uuid,
        "host": volume.host,
        "location": volume.location,
        "format": volume.format,
        "status": volume.status,
        "attached_to": volume.attached_to,
        "target_dev": volume.target_dev,
        "boot": volume.boot,
        "fault": volume.fault,
        "created_at": _iso(volume.created_at),
        "updated_at": _iso(volume.updated_at),
    }


class VolumeStore:
    """Volume rows in the scheduler database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _find(self, session: Session, ref: str, context: RequestContext | None = None) -> Volume:
        volume = find_by_ref(
            session, Volume, ref, Volume.name, "volumes", Volume.deleted.is_(False), context
        )
        if volume is None or volume.deleted:
            raise exception.VolumeNotFound(volume=ref)
        return volume

    def get(self, ref: str, context: RequestContext | None = None) -> dict[str, Any]:
        """The volume ``ref`` names, as ``context`` sees it (see scope.py).

        :raises VolumeNotFound: none, or another project's.
        """
        with self.db.session() as session:
            return volume_dict(self._find(session, ref, context))

    def list_volumes(
        self, project: str | None = None, attached_to: str | None = None
    ) -> list[dict[str, Any]]:
        with self.db.session() as session:
            query = select(Volume).where(Volume.deleted.is_(False)).order_by(Volume.created_at)
            if project:
                query = query.where(Volume.project == project)
            if attached_to:
                query = query.where(Volume.attached_to == attached_to)
            return [volume_dict(v) for v in session.scalars(query)]

    def create(self, **fields: Any) -> tuple[dict[str, Any], bool]:
        """Insert a volume in ``creating`` unless its uuid exists.

        :returns: (the record, True if it was created now).
        :raises DuplicateName: a live volume of the project has that name.
        """
        with self.db.session() as session:
            existing = session.get(Volume, fields["uuid"])
            if existing is not None:
                return volume_dict(existing), False
            clash = session.scalar(
                select(Volume.uuid).where(
                    Volume.name == fields["name"],
                    Volume.project == fields["project"],
                    Volume.deleted.is_(False),
                )
            )
            if clash is not None:
                raise exception.DuplicateName(what="Volume", name=fields["name"])
            volume = Volume(status="creating", deleted=False, boot=False, **fields)
            session.add(volume)
            session.flush()
            return volume_dict(volume), True

    def begin(
        self,
        ref: str,
        allowed: frozenset[str],
        status: str,
        operation: str,
        context: RequestContext | None = None,
        **values: Any,
    ) -> dict[str, Any]:
        """Compare-and-swap the volume (as ``context`` sees it) from one of
        ``allowed`` into ``status``.

        :raises VolumeStateConflict: it is in another status (nothing changes).
        """
        with self.db.session() as session:
            volume = self._find(session, ref, context)
            result = session.execute(
                update(Volume)
                .where(
                    Volume.uuid == volume.uuid,
                    Volume.deleted.is_(False),
                    Volume.status.in_(sorted(allowed)),
                )
                .values(status=status, updated_at=utcnow(), **values)
                .execution_options(synchronize_session=False)
            )
            if int(result.rowcount) != 1:  # type: ignore[attr-defined]
                session.refresh(volume)
                raise exception.VolumeStateConflict(
                    volume=volume.name,
                    status=volume.status,
                    reason="%s needs it %s" % (operation, " or ".join(sorted(allowed))),
                )
            session.refresh(volume)
            return volume_dict(volume)

    def update(self, uuid: str, **values: Any) -> dict[str, Any]:
        """Set fields of a live volume."""
        with self.db.session() as session:
            volume = self._find(session, uuid)
            for key, value in values.items():
                setattr(volume, key, value)
            session.flush()
            return volume_dict(volume)

    def settle(self, uuid: str, fault: str | None = None) -> dict[str, Any]:
        """End an operation: back to ``in-use`` if attached, else ``available``."""
        with self.db.session() as session:
            volume = self._find(session, uuid)
            volume.status = "in-use" if volume.attached_to else "available"
            if fault is not None:
                volume.fault = fault[:1024]
            session.flush()
            return volume_dict(volume)

    def mark_deleted(self, uuid: str) -> dict[str, Any]:
        with self.db.session() as session:
            volume = session.get(Volume, uuid)
            if volume is None:
                raise exception.VolumeNotFound(volume=uuid)
            volume.deleted = True
            volume.deleted_at = utcnow()
            volume.status = "deleted"
            return volume_dict(volume)

    def attached(self, instance_uuid: str) -> list[dict[str, Any]]:
        """The volumes attached to a server, its boot volume first."""
        volumes = self.list_volumes(attached_to=instance_uuid)
        return sorted(volumes, key=lambda v: (not v["boot"], v["target_dev"] or ""))

    def instance_project(self, instance_uuid: str) -> str:
        with self.db.session() as session:
            instance = session.get(Instance, instance_uuid)
            if instance is None:
                raise exception.InstanceNotFound(instance=instance_uuid)
            return instance.project
