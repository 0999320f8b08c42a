"""The agent's volume methods of the compute API (version 1.0).

The scheduler keeps the volume records; the agent does the storage and
hypervisor work and answers with what the backend made. Every method is a
call: the scheduler records the answer (or the error) at once.
"""

from __future__ import annotations

import logging
from typing import Any

import oslo_messaging as messaging

from compute_driver import exception
from compute_driver.agent.host import AgentHost, compute_method
from compute_driver.objects import ImageSpec
from compute_driver.virt.base import VolumeRef
from storage_backends import base as storage_base
from storage_backends import exception as storage_exception

LOG = logging.getLogger(__name__)


def volume_answer(volume: storage_base.Volume, backend: Any) -> dict[str, Any]:
    """A backend's volume as the compute API returns it."""
    return {
        "id": volume.id,
        "backend": volume.backend,
        "size_gb": volume.size_gb,
        "format": volume.format,
        "location": volume.location,
        "shared": bool(backend.describe().shared),
    }


class VolumeEndpoint:
    """Serves the volume methods of topic ``compute`` for this host."""

    target = messaging.Target(version="1.0")

    def __init__(self, host: AgentHost) -> None:
        self.host = host

    @compute_method
    def create_volume(
        self, ctxt: dict, volume: dict[str, Any], image: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        backend = self.host.storage.backend(volume["backend"])
        if image is None:
            made = backend.create_volume(volume["id"], volume["size_gb"])
        else:
            # NOTE: a linked clone where the backend can make one: a volume
            # from an image is the usual boot volume, and clones are instant.
            linked = bool(backend.describe().linked_clone)
            made = backend.create_from_image(
                volume["id"],
                ImageSpec.from_wire(image, self.host.conf.image.store_path),
                volume["size_gb"],
                linked=linked,
            )
        LOG.info("Volume %s made on %s (%s)", made.id, made.backend, made.location)
        return volume_answer(made, backend)

    @compute_method
    def delete_volume(self, ctxt: dict, volume: dict[str, Any]) -> None:
        self.host.storage.backend(volume["backend"]).delete_volume(volume["id"])
        LOG.info("Volume %s deleted from %s", volume["id"], volume["backend"])

    @compute_method
    def resize_volume(
        self, ctxt: dict, volume: dict[str, Any], size_gb: int, uuid: str | None = None
    ) -> dict[str, Any]:
        backend = self.host.storage.backend(volume["backend"])
        if not backend.describe().resize:
            raise storage_exception.Unsupported(backend=backend.name, ability="resize")
        current = self.host.storage.volume_of(volume)
        if size_gb < current.size_gb:
            raise storage_exception.InvalidVolumeSize(
                volume=volume["id"],
                size_gb=size_gb,
                reason="it is %d GiB and shrinking would lose data" % current.size_gb,
            )
        if uuid is not None:
            # NOTE: QEMU grows an open image itself (qcow2 file, librbd,
            # libnfs) and tells the guest; the backend must not touch an
            # image a running guest holds.
            with self.host.instance_lock(uuid):
                self.host.driver.extend_volume(uuid, volume["id"], size_gb * 1024**3)
            grown = backend.get_volume(volume["id"])
        else:
            grown = backend.resize_volume(volume["id"], size_gb)
        return volume_answer(grown, backend)

    @compute_method
    def attach_volume(self, ctxt: dict, uuid: str, volume: dict[str, Any]) -> dict[str, Any]:
        disk = self.host.storage.disk_of(volume)
        ref = VolumeRef(volume["id"], volume["backend"], volume.get("target_dev") or "")
        with self.host.instance_lock(uuid):
            target = self.host.driver.attach_volume(uuid, disk, ref)
        return {"target_dev": target}

    @compute_method
    def detach_volume(self, ctxt: dict, uuid: str, volume: dict[str, Any]) -> None:
        timeout = self.host.conf.agent.volume_detach_timeout
        with self.host.instance_lock(uuid):
            try:
                self.host.driver.detach_volume(uuid, volume["id"], timeout)
            except exception.InstanceNotFound:
                # NOTE: the server's guest is gone (a failed build): nothing holds the volume.
                LOG.info("Detach of %s from %s: no such guest here", volume["id"], uuid)

    @compute_method
    def volume_snapshot(
        self, ctxt: dict, volume: dict[str, Any], action: str, name: str | None = None
    ) -> Any:
        backend = self.host.storage.backend(volume["backend"])
        if not backend.describe().snapshots:
            raise storage_exception.Unsupported(backend=backend.name, ability="snapshots")
        if action == "list":
            return backend.list_snapshots(volume["id"])
        if name is None:
            raise exception.InvalidPayload(
                method="compute.volume_snapshot", reason="name: required for %s" % action
            )
        if action == "create":
            backend.create_snapshot(volume["id"], name)
        elif action == "revert":
            backend.revert_to_snapshot(volume["id"], name)
            # NOTE: a revert brings the snapshot's size back too.
            return volume_answer(backend.get_volume(volume["id"]), backend)
        else:
            backend.delete_snapshot(volume["id"], name)
        return None
