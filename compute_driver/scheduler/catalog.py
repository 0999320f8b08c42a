"""The scheduler's catalog: every read and write of the flavors and images tables.

A server is built from one flavor and one image. Composed around the
scheduler's :class:`~compute_driver.scheduler.database.Database`, as the
server, volume and network stores are.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from compute_driver import exception, guest_properties
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler import scope
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.models import Flavor, Image, Instance
from compute_driver.scheduler.records import flavor_dict, image_dict
from compute_driver.scheduler.statements import (
    FLAVOR_BY_NAME,
    IMAGE_BY_NAME_IN_PROJECT,
    IMAGE_BY_UUID,
)


class Catalog:
    """Flavor and image rows in the scheduler database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- flavors -----------------------------------------------------------

    def list_flavors(self) -> list[dict[str, Any]]:
        with self.db.session() as session:
            return [
                flavor_dict(f) for f in session.scalars(select(Flavor).order_by(Flavor.memory_mb))
            ]

    def get_flavor(self, name: str) -> dict[str, Any]:
        with self.db.session() as session:
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
        """Store a flavor; a repeated identical create returns the existing one.

        :raises GuestConfigError: an extra spec no host could build.
        :raises DuplicateName: another flavor has that name.
        """
        guest_properties.check_flavor(vcpus, memory_mb, extra_specs)
        with self.db.session() as session:
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
        with self.db.session() as session:
            flavor = session.get(Flavor, name)
            if flavor is None:
                raise exception.FlavorNotFound(flavor=name)
            session.delete(flavor)

    # --- images ------------------------------------------------------------

    @staticmethod
    def _image_row(
        connection: sa.Connection | Session, ref: str, context: RequestContext | None = None
    ) -> sa.Row:
        """The row of the image ``ref`` names (its uuid or its name), among
        the public ones and those of ``context``'s project (see scope.py).

        A uuid match wins. Names are unique among the public images and
        within a project, so a project sees at most two images of one name:
        its own and a public one; its own wins (a public image imported
        later never changes what a project's name means).

        :raises ImageNotFound: none, or another project's.
        A context of no project (an admin's, or the scheduler's own) finds
        the public image of that name, else the one project image of it.

        :raises Conflict: a context of no project sees no public image of
            that name and several projects' images; the message lists their
            UUIDs.
        """
        row = connection.execute(IMAGE_BY_UUID, {"image": ref}).first()
        if row is not None and scope.sees(context, row.project, public=True):
            return row
        # NOTE: the uuid of another project's image: a visible image may
        # still bear that string as its name.
        if context is not None and context.project is not None:
            row = connection.execute(
                IMAGE_BY_NAME_IN_PROJECT, {"image": ref, "project": context.project}
            ).first()
        elif scope.is_admin(context):
            rows = connection.execute(
                select(*Image.__table__.c).where(Image.name == ref).order_by(Image.uuid)
            ).all()
            # NOTE: the public image first, as for a project: a project naming
            # its image like a public one must not break the operator's names.
            rows = [r for r in rows if r.project is None] or rows
            if len(rows) > 1:
                raise exception.Conflict(
                    reason="%d images are named %s (%s); use a UUID"
                    % (len(rows), ref, ", ".join(r.uuid for r in rows))
                )
            row = rows[0] if rows else None
        else:
            row = None  # no project, no names (the policy refuses first)
        if row is None:
            raise exception.ImageNotFound(image=ref)
        return row

    def get_image(self, ref: str, context: RequestContext | None = None) -> dict[str, Any]:
        with self.db.connection() as connection:
            return image_dict(self._image_row(connection, ref, context))

    def get_flavor_and_image(
        self, flavor: str, image: str, context: RequestContext | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A create's flavor and image, read in one transaction.

        :raises FlavorNotFound: / :raises ImageNotFound:
        """
        with self.db.connection() as connection:
            flavor_row = connection.execute(FLAVOR_BY_NAME, {"flavor": flavor}).first()
            if flavor_row is None:
                raise exception.FlavorNotFound(flavor=flavor)
            return flavor_dict(flavor_row), image_dict(self._image_row(connection, image, context))

    def find_image_by_name(self, name: str, project: str | None = None) -> dict[str, Any] | None:
        """The image named ``name`` in one owner's scope: ``project``'s own
        images, or (None) the public ones; names are unique in each."""
        owner = Image.project.is_(None) if project is None else Image.project == project
        with self.db.session() as session:
            image = session.scalar(select(Image).where(Image.name == name, owner))
            return image_dict(image) if image else None

    def list_images(self, project: str | None = None) -> list[dict[str, Any]]:
        """Images, by name: every one, or the public ones and ``project``'s."""
        query = select(Image).order_by(Image.name)
        if project is not None:
            query = query.where(sa.or_(Image.project.is_(None), Image.project == project))
        with self.db.session() as session:
            return [image_dict(i) for i in session.scalars(query)]

    def create_image(self, **fields: Any) -> dict[str, Any]:
        """Store an image record.

        :raises GuestConfigError: a property (or command line) no host could build.
        :raises DuplicateName: another image of the same owner (the same
            project, or public for a public one) has that name.
        """
        guest_properties.check_image(fields.get("properties"), fields.get("cmdline"))
        if self.find_image_by_name(fields["name"], fields.get("project")) is not None:
            raise exception.DuplicateName(what="Image", name=fields["name"])
        try:
            with self.db.session() as session:
                image = Image(**fields)
                session.add(image)
                session.flush()
                return image_dict(image)
        except IntegrityError as exc:
            # NOTE: a concurrent create of the same name won the unique index.
            if "name" in str(exc.orig):
                raise exception.DuplicateName(what="Image", name=fields["name"]) from None
            raise

    def delete_image(self, ref: str, context: RequestContext | None = None) -> dict[str, Any]:
        """Remove an image record; refused while a live server uses it.

        :raises Forbidden: a public image, and ``context`` is not an admin's.
        """
        with self.db.session() as session:
            image = session.get_one(Image, self._image_row(session, ref, context).uuid)
            if image.project is None and not scope.is_admin(context):
                raise exception.Forbidden(
                    action="deleting public image %s" % image.name,
                    reason="it needs an admin context",
                )
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
