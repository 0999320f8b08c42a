"""The image methods of the scheduler API 1.0: import, create from a server,
list, show, delete. Records in the store, files in the image store
(``imagestore.py``)."""

from __future__ import annotations

from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver import exception, guest_properties
from compute_driver.rpc import compute_api
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler import scope
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.imagestore import ImageStore
from compute_driver.scheduler.scope import scheduler_method
from compute_driver.scheduler.store import Store


class ImageEndpoint:
    """Serves the image methods of topic ``scheduler``."""

    target = messaging.Target(version="1.0")

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        store: Store,
        catalog: Catalog,
        compute: compute_api.ComputeAPI,
        files: ImageStore,
    ) -> None:
        self.conf = conf
        self.store = store
        self.catalog = catalog
        self.compute = compute
        #: The image files (the records are in the store).
        self.images = files

    @scheduler_method
    def import_image(
        self,
        context: RequestContext,
        uuid: str,
        name: str,
        file: str,
        kernel: str | None = None,
        initrd: str | None = None,
        cmdline: str | None = None,
        properties: dict[str, str] | None = None,
        disk_format: str | None = None,
    ) -> dict[str, Any]:
        """Import an image from the import directory (``[image] import_path``).

        ``file``, ``kernel`` and ``initrd`` are names relative to that
        directory; ``disk_format`` the format the caller says the disk has.
        """
        # NOTE: checked before the files are copied (create_image checks again).
        guest_properties.check_image(properties, cmdline)
        if (kernel is None) != (initrd is None):
            raise exception.InvalidImage(image=name, reason="--kernel and --initrd go together")
        if cmdline is not None and kernel is None:
            raise exception.InvalidImage(image=name, reason="--cmdline needs --kernel")
        try:
            existing = self.catalog.get_image(uuid)
        except exception.ImageNotFound:
            existing = None
        if existing is not None:
            return existing  # a repeated import changes nothing
        if self.catalog.find_image_by_name(name, project=None) is not None:  # public names
            raise exception.DuplicateName(what="Image", name=name)
        fields = self.images.import_files(uuid, name, file, kernel, initrd, disk_format)
        try:
            return self.catalog.create_image(
                uuid=uuid, name=name, cmdline=cmdline, properties=properties or {}, **fields
            )
        except Exception:
            self.images.remove(uuid)
            raise

    @scheduler_method
    def create_image_from_server(
        self, context: RequestContext, uuid: str, name: str, server: str
    ) -> dict:
        """An image (template) made of a stopped server's root disk, flattened;
        it belongs to the server's project."""
        try:
            existing = self.catalog.get_image(uuid)
        except exception.ImageNotFound:
            pass
        else:
            scope.repeated(context, existing["project"], uuid)
            return existing  # a repeated request changes nothing
        record = self.store.begin_task(server, frozenset({"stopped"}), "imaging", context)
        try:
            # NOTE: names are unique within the image's project only (the
            # server's): another project's image of that name is no clash.
            if self.catalog.find_image_by_name(name, record["project"]) is not None:
                raise exception.DuplicateName(what="Image", name=name)
            source = self.catalog.get_image(record["image"])
            work = self.images.begin_export(uuid)
            try:
                self.compute.export_root_disk(record["host"], record["uuid"], uuid)
                fields = self.images.finish_export(uuid, work, source)
            except BaseException:
                self.images.abandon(work)
                raise
            return self.catalog.create_image(
                uuid=uuid,
                name=name,
                cmdline=source["cmdline"],
                properties=source["properties"],
                project=record["project"],
                **fields,
            )
        finally:
            self.store.update_instance(record["uuid"], task_state=None)

    @scheduler_method
    def list_images(self, context: RequestContext) -> list:
        """The public images and the caller's project's (an admin's: all)."""
        return self.catalog.list_images(project=scope.list_project(context))

    @scheduler_method
    def show_image(self, context: RequestContext, image: str) -> dict[str, Any]:
        return self.catalog.get_image(image, context)

    @scheduler_method
    def delete_image(self, context: RequestContext, image: str) -> dict[str, Any]:
        gone = self.catalog.delete_image(image, context)
        self.images.remove(gone["uuid"])
        return gone
