"""The scheduler's catalog: every read and write of the flavors and images tables.

A server is built from one flavor and one image.
:class:`~compute_driver.scheduler.store.Store` inherits these methods.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from compute_driver import exception, guest_properties
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler import scope
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.models import Flavor, Image, Instance
from compute_driver.scheduler.records import flavor_dict, image_dict
from compute_driver.scheduler.statements import FLAVOR_BY_NAME, IMAGE_BY_REF


class Catalog(Database):
    """Flavor and image rows in the scheduler database."""

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
        """Store a flavor; a repeated identical create returns the existing one.

        :raises GuestConfigError: an extra spec no host could build.
        :raises DuplicateName: another flavor has that name.
        """
        guest_properties.check_flavor(vcpus, memory_mb, extra_specs)
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

    @staticmethod
    def _image_row(
        connection: sa.Connection | Session, ref: str, context: RequestContext | None = None
    ) -> sa.Row:
        """The row of the image ``ref`` names (its uuid or its name), among
        the public ones and those of ``context``'s project (see scope.py).

        :raises ImageNotFound: none, or another project's.
        """
        row = connection.execute(IMAGE_BY_REF, {"image": ref}).first()
        if row is not None and not scope.sees(context, row.project, public=True):
            # NOTE: the uuid of another project's image: a visible image may
            # still bear that string as its name.
            row = connection.execute(
                select(*Image.__table__.c).where(Image.name == ref, Image.uuid != row.uuid)
            ).first()
        if row is None or not scope.sees(context, row.project, public=True):
            raise exception.ImageNotFound(image=ref)
        return row

    def get_image(self, ref: str, context: RequestContext | None = None) -> dict[str, Any]:
        with self.connection() as connection:
            return image_dict(self._image_row(connection, ref, context))

    def get_flavor_and_image(
        self, flavor: str, image: str, context: RequestContext | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A create's flavor and image, read in one transaction.

        :raises FlavorNotFound: / :raises ImageNotFound:
        """
        with self.connection() as connection:
            flavor_row = connection.execute(FLAVOR_BY_NAME, {"flavor": flavor}).first()
            if flavor_row is None:
                raise exception.FlavorNotFound(flavor=flavor)
            return flavor_dict(flavor_row), image_dict(self._image_row(connection, image, context))

    def find_image_by_name(self, name: str) -> dict[str, Any] | None:
        with self.session() as session:
            image = session.scalar(select(Image).where(Image.name == name))
            return image_dict(image) if image else None

    def list_images(self, project: str | None = None) -> list[dict[str, Any]]:
        """Images, by name: every one, or the public ones and ``project``'s."""
        query = select(Image).order_by(Image.name)
        if project is not None:
            query = query.where(sa.or_(Image.project.is_(None), Image.project == project))
        with self.session() as session:
            return [image_dict(i) for i in session.scalars(query)]

    def create_image(self, **fields: Any) -> dict[str, Any]:
        """Store an image record.

        :raises GuestConfigError: a property (or command line) no host could build.
        :raises DuplicateName: another image has that name.
        """
        guest_properties.check_image(fields.get("properties"), fields.get("cmdline"))
        with self.session() as session:
            if session.scalar(select(Image).where(Image.name == fields["name"])) is not None:
                raise exception.DuplicateName(what="Image", name=fields["name"])
            image = Image(**fields)
            session.add(image)
            session.flush()
            return image_dict(image)

    def delete_image(self, ref: str, context: RequestContext | None = None) -> dict[str, Any]:
        """Remove an image record; refused while a live server uses it.

        :raises Forbidden: a public image, and ``context`` is not an admin's.
        """
        with self.session() as session:
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
