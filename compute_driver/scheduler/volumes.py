"""The scheduler's volume methods (scheduler API 1.0): records here, work on an agent.

Which agent does a volume's work: the host of the server it is attached
to; otherwise the host that made it, or, for a shared backend (NFS, iSCSI,
RBD: every host sees the same volumes), any up host that offers the backend.
A volume on a local backend (``dir``) can only be attached to servers on
the host that holds it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver import exception
from compute_driver.rpc import compute_api, schemas
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler import records, scope
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.imagestore import agent_image
from compute_driver.scheduler.scope import scheduler_method
from compute_driver.scheduler.store import Store
from compute_driver.scheduler.volume_store import VolumeStore
from compute_driver.states import ATTACH_STATES

LOG = logging.getLogger(__name__)

GiB = 1024**3


def agent_volume(record: dict[str, Any]) -> dict[str, Any]:
    """A volume record as the compute API takes it (``schemas.VOLUME``)."""
    return records.volume_spec(record).to_wire()


class VolumeManager:
    """Serves the volume methods of topic ``scheduler``."""

    target = messaging.Target(version="1.0")

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        store: Store,
        catalog: Catalog,
        compute: compute_api.ComputeAPI,
    ) -> None:
        self.conf = conf
        self.store = store
        self.catalog = catalog
        self.volumes = VolumeStore(store.db)
        self.compute = compute

    # --- where the work happens -------------------------------------------------

    def _hosts_with(self, backend: str) -> list[dict[str, Any]]:
        """Up hosts that offer ``backend``, most recently reported first."""
        hosts = self.store.list_hosts(self.conf.scheduler.service_down_time)
        offering = [
            h
            for h in hosts
            if h["state"] == "up" and backend in h["capabilities"].get("storage_backends", ())
        ]
        return sorted(offering, key=lambda h: h["reported_at"] or "", reverse=True)

    def _agent_for(self, volume: dict[str, Any]) -> str:
        """The host whose agent does ``volume``'s work now.

        :raises NoValidHost: no up host can reach the volume.
        """
        if volume["attached_to"]:
            host = self.store.get_instance(volume["attached_to"])["host"]
            if host:
                return str(host)
        hosts = [h["name"] for h in self._hosts_with(volume["backend"])]
        if volume["host"] in hosts:
            return str(volume["host"])
        if volume["shared"] and hosts:
            return str(hosts[0])
        where = "its host %s is down" % volume["host"] if volume["host"] else "no host made it"
        if volume["shared"]:
            where = "no up host offers storage backend %s" % volume["backend"]
        raise exception.NoValidHost(instance="volume " + volume["name"], reason=where)

    # --- create, list, show, delete ------------------------------------------------

    @scheduler_method
    def create_volume(
        self,
        context: RequestContext,
        uuid: str,
        name: str,
        size_gb: int,
        backend: str,
        project: str | None = None,
        image: str | None = None,
        host: str | None = None,
    ) -> dict[str, Any]:
        project = scope.owner(context, project, "create_volume")
        image_rec = self.catalog.get_image(image, context) if image is not None else None
        if image_rec is not None and size_gb * GiB < image_rec["virtual_size"]:
            raise exception.InvalidVolumeSize(
                volume=name,
                size_gb=size_gb,
                reason="image %s needs %d GiB"
                % (image_rec["name"], math.ceil(image_rec["virtual_size"] / GiB)),
            )
        candidates = self._hosts_with(backend)
        if host is not None:
            candidates = [h for h in candidates if h["name"] == host]
        if not candidates:
            raise exception.NoValidHost(
                instance="volume " + name,
                reason="no up host%s offers storage backend %s"
                % (" named " + host if host else "", backend),
            )
        chosen = candidates[0]["name"]
        record, created = self.volumes.create(
            uuid=uuid,
            name=name,
            project=project,
            size_gb=size_gb,
            backend=backend,
            image_uuid=image_rec["uuid"] if image_rec else None,
            host=chosen,
        )
        if not created:
            scope.repeated(context, record["project"], uuid)
            LOG.info("create_volume %s repeated: returning the existing record", uuid)
            return record
        try:
            made = self.compute.create_volume(
                chosen,
                {"id": uuid, "backend": backend, "size_gb": size_gb},
                agent_image(image_rec) if image_rec else None,
            )
        except exception.ComputeDriverError as exc:
            self.volumes.update(uuid, status="error", fault=exc.message[:1024])
            raise
        LOG.info("Volume %s (%s) made on %s by %s", name, uuid, backend, chosen)
        return self.volumes.update(
            uuid,
            status="available",
            size_gb=made["size_gb"],
            location=made["location"],
            format=made["format"],
            shared=made["shared"],
        )

    @scheduler_method
    def list_volumes(
        self, context: RequestContext, project: str | None = None, all_projects: bool = False
    ) -> list[dict[str, Any]]:
        return self.volumes.list_volumes(project=scope.list_project(context, project, all_projects))

    @scheduler_method
    def show_volume(self, context: RequestContext, volume: str) -> dict[str, Any]:
        return self.volumes.get(volume, context)

    @scheduler_method
    def delete_volume(self, context: RequestContext, volume: str) -> dict[str, Any]:
        record = self.volumes.begin(
            volume, frozenset({"available", "error"}), "deleting", "delete", context
        )
        if record["location"] is not None or record["status"] == "error":
            try:
                self.compute.delete_volume(self._agent_for(record), agent_volume(record))
            except exception.ComputeDriverError as exc:
                self.volumes.update(record["uuid"], status="error", fault=exc.message[:1024])
                raise
        return self.volumes.mark_deleted(record["uuid"])

    # --- boot volumes (create_server) ---------------------------------------------

    def bootable(
        self, volume: str, project: str, instance_uuid: str, context: RequestContext
    ) -> dict[str, Any]:
        """The record of ``volume`` (as ``context`` sees it) if the new
        server ``instance_uuid`` of ``project`` may boot from it (or already
        does: a repeated create).

        :raises VolumeNotFound, ProjectMismatch, VolumeStateConflict: it may not.
        """
        record = self.volumes.get(volume, context)
        if record["project"] != project:
            raise exception.ProjectMismatch(
                what="Volume", name=record["name"], instance="of project %s" % project
            )
        if record["attached_to"] == instance_uuid:
            return record
        if record["status"] != "available":
            raise exception.VolumeStateConflict(
                volume=record["name"], status=record["status"], reason="boot needs it available"
            )
        return record

    def claim_boot_volume(self, record: dict[str, Any], instance_uuid: str) -> dict[str, Any]:
        """Attach ``record`` to the new server as its boot disk (compare-and-swap).

        The volume stays with the server, in ERROR too, until the server is deleted.
        """
        return self.volumes.begin(
            record["uuid"],
            frozenset({"available"}),
            "in-use",
            "boot",
            attached_to=instance_uuid,
            boot=True,
            target_dev="vda",
        )

    def attached(self, instance_uuid: str) -> list[dict[str, Any]]:
        """The volumes attached to a server, its boot volume among them."""
        return self.volumes.attached(instance_uuid)

    def boot_volume_of(self, instance_uuid: str) -> dict[str, Any] | None:
        """The record of the volume a server boots from (None: a root disk)."""
        return next((v for v in self.volumes.attached(instance_uuid) if v["boot"]), None)

    # --- attach, detach ------------------------------------------------------------

    def _attachable(
        self, server: str, volume: str, context: RequestContext
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The server and volume records (as ``context`` sees them), if the
        volume may go on that server.

        :raises ProjectMismatch, InstanceStateConflict, Conflict: it may not.
        """
        instance = self.store.get_instance(server, context=context)
        record = self.volumes.get(volume, context)
        if record["project"] != instance["project"]:
            raise exception.ProjectMismatch(
                what="Volume", name=record["name"], instance=instance["name"]
            )
        if not instance["host"] or instance["vm_state"] not in ATTACH_STATES:
            raise exception.InstanceStateConflict(
                instance=instance["name"],
                state=instance["vm_state"],
                reason="volumes attach to active, stopped or paused servers on a host",
            )
        if not record["shared"] and record["host"] != instance["host"]:
            raise exception.Conflict(
                reason="volume %s is on local storage of host %s; server %s runs on %s"
                % (record["name"], record["host"], instance["name"], instance["host"])
            )
        return instance, record

    @scheduler_method
    def attach_volume(self, context: RequestContext, server: str, volume: str) -> dict[str, Any]:
        instance, record = self._attachable(server, volume, context)
        # NOTE: one limit, the one a hard reboot's payload accepts.
        count = sum(not v["boot"] for v in self.volumes.attached(instance["uuid"]))
        if count >= schemas.MAX_VOLUMES:
            raise exception.VolumeLimitReached(
                instance=instance["name"], count=count, limit=schemas.MAX_VOLUMES
            )
        record = self.volumes.begin(
            record["uuid"],
            frozenset({"available"}),
            "attaching",
            "attach",
            attached_to=instance["uuid"],
        )
        try:
            answer = self.compute.attach_volume(
                instance["host"], instance["uuid"], agent_volume(record)
            )
        except exception.ComputeDriverError as exc:
            self.volumes.update(record["uuid"], attached_to=None, target_dev=None)
            self.volumes.settle(record["uuid"], fault=_fault("attach", exc))
            raise
        LOG.info(
            "Volume %s attached to %s as %s", record["name"], instance["name"], answer["target_dev"]
        )
        return self.volumes.update(
            record["uuid"], status="in-use", target_dev=answer["target_dev"], fault=None
        )

    @scheduler_method
    def detach_volume(self, context: RequestContext, server: str, volume: str) -> dict[str, Any]:
        instance = self.store.get_instance(server, context=context)
        record = self.volumes.get(volume, context)
        if record["attached_to"] != instance["uuid"]:
            raise exception.VolumeNotAttached(volume=record["name"], instance=instance["name"])
        if record["boot"]:
            raise exception.VolumeStateConflict(
                volume=record["name"],
                status=record["status"],
                reason="it is the boot disk of server %s; delete the server instead"
                % instance["name"],
            )
        record = self.volumes.begin(record["uuid"], frozenset({"in-use"}), "detaching", "detach")
        try:
            self.compute.detach_volume(instance["host"], instance["uuid"], agent_volume(record))
        except exception.ComputeDriverError as exc:
            self.volumes.settle(record["uuid"], fault=_fault("detach", exc))
            raise
        self.volumes.update(record["uuid"], attached_to=None, target_dev=None, fault=None)
        return self.volumes.settle(record["uuid"])

    # --- resize, snapshots ---------------------------------------------------------

    @scheduler_method
    def resize_volume(self, context: RequestContext, volume: str, size_gb: int) -> dict[str, Any]:
        record = self.volumes.get(volume, context)
        if size_gb < record["size_gb"]:
            raise exception.InvalidVolumeSize(
                volume=record["name"],
                size_gb=size_gb,
                reason="it is %d GiB and shrinking would lose data" % record["size_gb"],
            )
        record = self.volumes.begin(
            record["uuid"], frozenset({"available", "in-use"}), "resizing", "resize"
        )
        try:
            grown = self.compute.resize_volume(
                self._agent_for(record), agent_volume(record), size_gb, record["attached_to"]
            )
        except exception.ComputeDriverError as exc:
            self.volumes.settle(record["uuid"], fault=_fault("resize", exc))
            raise
        self.volumes.update(record["uuid"], size_gb=grown["size_gb"], fault=None)
        return self.volumes.settle(record["uuid"])

    @scheduler_method
    def volume_snapshot(
        self, context: RequestContext, volume: str, action: str, name: str | None = None
    ) -> Any:
        record = self.volumes.get(volume, context)
        if action == "list":
            return self.compute.volume_snapshot(
                self._agent_for(record), agent_volume(record), "list"
            )
        if name is None:
            raise exception.InvalidPayload(
                method="scheduler.volume_snapshot", reason="name: required for %s" % action
            )
        # NOTE: a revert changes the disk under its reader: only while no
        # guest has the volume.
        allowed = frozenset({"available"} if action == "revert" else {"available", "in-use"})
        record = self.volumes.begin(record["uuid"], allowed, "snapshotting", "snapshot " + action)
        try:
            answer = self.compute.volume_snapshot(
                self._agent_for(record), agent_volume(record), action, name
            )
        except exception.ComputeDriverError as exc:
            self.volumes.settle(record["uuid"], fault=_fault("snapshot " + action, exc))
            raise
        if action == "revert" and answer:
            self.volumes.update(record["uuid"], size_gb=answer["size_gb"])
        return self.volumes.settle(record["uuid"])


def _fault(operation: str, exc: exception.ComputeDriverError) -> str | None:
    """What a failed operation leaves on the volume: nothing for a refused
    request (the volume is as it was), the reason for a failure."""
    if exc.kind == "invalid":
        return None
    return "%s failed: %s" % (operation, exc.message)
