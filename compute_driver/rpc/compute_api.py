"""Client side of the compute API (topic ``compute``, server = host name).

Only the scheduler may publish here (the broker's topic permissions). And
since RabbitMQ lets every service that answers calls publish to any queue
through the default exchange, every request also carries ``signature``,
the scheduler's HMAC under the key of the host it goes to (see the agent
reports API): an agent with ``[agent_reports] key`` refuses a request
without a valid one (``request_refused``), so no other agent can command it.

Version history:
  1.0 - build_instance, delete_instance, get_console_output,
        get_instance_info, ping; stop/start/reboot/pause/unpause/
        suspend/resume_instance; snapshot_create/revert/delete_instance,
        list_instance_snapshots, get_diagnostics, export_root_disk;
        create_volume, delete_volume, resize_volume, attach_volume,
        detach_volume, volume_snapshot; attach_interface, detach_interface,
        update_topology; ports in build_instance and delete_instance;
        ``signature`` on every request (issue 12).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from oslo_config import cfg

from compute_driver.rpc import report_signing, schemas
from compute_driver.rpc.client import RPCClientBase, present
from compute_driver.rpc.context import RequestContext

TOPIC = "compute"


class ComputeAPI(RPCClientBase):
    """What the scheduler (or any scheduler author's code) asks of an agent:
    one Python method per remote method, each checking its payload against
    ``schemas.COMPUTE_METHODS`` before it is sent."""

    TOPIC = TOPIC
    API_VERSION = "1.0"
    CAP_OPTION = "compute"
    METHODS = schemas.COMPUTE_METHODS
    CASTS = schemas.COMPUTE_CASTS

    def __init__(
        self,
        conf: cfg.ConfigOpts = cfg.CONF,
        timeout: int | None = None,
        context: RequestContext | None = None,
    ) -> None:
        super().__init__(conf, timeout, context)
        #: The secret host keys derive from; None sends requests unsigned.
        self._secret: str | None = conf.agent_reports.secret or None
        self.signer = self._sign_for_host

    # NOTE: every request is signed with the key of the host it goes to
    # (report_signing.py): no other agent can make one an agent accepts.
    def _sign_for_host(
        self, method: str, context: dict[str, Any], payload: dict[str, Any], host: str | None
    ) -> dict[str, Any]:
        if self._secret is None or host is None:
            return payload
        return report_signing.sign_request(self._secret, host, method, payload)

    def _long(self, host: str, method: str, payload: dict[str, Any]) -> Any:
        # NOTE: a copy, a resize, a snapshot export or a guest releasing a
        # disk or a NIC may take minutes: these take the long timeout.
        return self._request(method, payload, host=host, timeout=self.conf.rpc.long_call_timeout)

    def ping(self, host: str) -> dict[str, Any]:
        """Call: the agent's name and API version; proves it listens."""
        return cast(dict[str, Any], self._request("ping", {}, host=host))

    def build_instance(self, host: str, instance: dict[str, Any]) -> None:
        """Cast: build and start ``instance`` (``ServerSpec.to_wire()``;
        idempotent by instance uuid)."""
        self._request("build_instance", {"instance": instance}, host=host)

    def delete_instance(
        self, host: str, uuid: str, ports: list[dict[str, Any]] | None = None
    ) -> None:
        """Cast: destroy the instance and everything made for it, unplugging
        ``ports`` (idempotent)."""
        self._request("delete_instance", present(uuid=uuid, ports=ports or None), host=host)

    def attach_interface(self, host: str, uuid: str, port: dict[str, Any]) -> None:
        """Call: plug ``port`` and attach its NIC to the server (live if it runs)."""
        self._long(host, "attach_interface", {"uuid": uuid, "port": port})

    def detach_interface(self, host: str, uuid: str, port: dict[str, Any]) -> None:
        """Call: detach the port's NIC once the guest released it, and unplug it."""
        self._long(host, "detach_interface", {"uuid": uuid, "port": port})

    def update_topology(
        self, host: str, network: dict[str, Any], remote_endpoints: list[str]
    ) -> None:
        """Cast: the tunnel endpoints of the other hosts with ports on ``network``."""
        self._request(
            "update_topology",
            {"network": network, "remote_endpoints": remote_endpoints},
            host=host,
        )

    def stop_instance(self, host: str, uuid: str, timeout: int | None = None) -> None:
        """Cast: ACPI shutdown, forced off after ``timeout`` s (default: the agent's option)."""
        self._request("stop_instance", present(uuid=uuid, timeout=timeout), host=host)

    def start_instance(self, host: str, uuid: str) -> None:
        """Cast: power the guest on."""
        self._request("start_instance", {"uuid": uuid}, host=host)

    def reboot_instance(
        self, host: str, uuid: str, hard: bool, instance: dict[str, Any] | None = None
    ) -> None:
        """Cast: soft (ACPI, falling back to hard) or hard reboot; with
        ``instance`` (the build payload), a hard reboot writes the domain afresh."""
        self._request(
            "reboot_instance", present(uuid=uuid, hard=hard, instance=instance), host=host
        )

    def pause_instance(self, host: str, uuid: str) -> None:
        """Cast: pause the guest's vCPUs (it stays in memory)."""
        self._request("pause_instance", {"uuid": uuid}, host=host)

    def unpause_instance(self, host: str, uuid: str) -> None:
        """Cast: let a paused guest run again."""
        self._request("unpause_instance", {"uuid": uuid}, host=host)

    def suspend_instance(self, host: str, uuid: str) -> None:
        """Cast: save the guest's memory to disk and stop it."""
        self._request("suspend_instance", {"uuid": uuid}, host=host)

    def resume_instance(self, host: str, uuid: str) -> None:
        """Cast: restore a suspended guest."""
        self._request("resume_instance", {"uuid": uuid}, host=host)

    def instance_action(self, host: str, uuid: str, method: str) -> None:
        """Cast ``method``, one of start/pause/unpause/suspend/resume ``_instance``
        (for callers that pick the action by name)."""
        actions = {
            "start_instance": self.start_instance,
            "pause_instance": self.pause_instance,
            "unpause_instance": self.unpause_instance,
            "suspend_instance": self.suspend_instance,
            "resume_instance": self.resume_instance,
        }
        actions[method](host, uuid)

    def snapshot_create_instance(
        self,
        host: str,
        uuid: str,
        name: str,
        kind: str,
        quiesce: bool | None = None,
        description: str | None = None,
    ) -> None:
        """Cast: snapshot the server's disks (and memory, ``internal`` of a running one)."""
        self._request(
            "snapshot_create_instance",
            present(uuid=uuid, name=name, kind=kind, quiesce=quiesce, description=description),
            host=host,
        )

    def snapshot_revert_instance(self, host: str, uuid: str, name: str) -> None:
        """Cast: bring the server back to snapshot ``name``."""
        self._request("snapshot_revert_instance", {"uuid": uuid, "name": name}, host=host)

    def snapshot_delete_instance(self, host: str, uuid: str, name: str) -> None:
        """Cast: delete snapshot ``name`` of the server."""
        self._request("snapshot_delete_instance", {"uuid": uuid, "name": name}, host=host)

    def snapshot_instance(self, host: str, method: str, uuid: str, **payload: Any) -> None:
        """Cast ``method``, one of snapshot_create/revert/delete_instance (for
        callers that pick it by name)."""
        methods: dict[str, Callable[..., None]] = {
            "snapshot_create_instance": self.snapshot_create_instance,
            "snapshot_revert_instance": self.snapshot_revert_instance,
            "snapshot_delete_instance": self.snapshot_delete_instance,
        }
        methods[method](host, uuid, **payload)

    def list_instance_snapshots(self, host: str, uuid: str) -> list[dict[str, Any]]:
        """Call: the server's snapshots, oldest first, with parents and children."""
        return cast(
            list[dict[str, Any]],
            self._request("list_instance_snapshots", {"uuid": uuid}, host=host),
        )

    def export_root_disk(self, host: str, uuid: str, image: str) -> dict[str, Any]:
        """Call (long): write a stopped instance's root disk, flattened, as the
        disk of new image ``image`` (into the export directory the agent
        derives from its image store and that UUID; no path travels)."""
        return cast(
            dict[str, Any], self._long(host, "export_root_disk", {"uuid": uuid, "image": image})
        )

    def get_diagnostics(self, host: str, uuid: str) -> dict[str, Any]:
        """Call: CPU, memory, vCPU, disk and NIC counters of one instance."""
        return cast(dict[str, Any], self._request("get_diagnostics", {"uuid": uuid}, host=host))

    def get_console_output(self, host: str, uuid: str, lines: int | None = None) -> str:
        """Call: the last ``lines`` lines of the serial console log."""
        return cast(
            str, self._request("get_console_output", present(uuid=uuid, lines=lines), host=host)
        )

    def get_instance_info(self, host: str, uuid: str) -> dict[str, Any]:
        """Call: power state and resources of one instance as libvirt sees it."""
        return cast(dict[str, Any], self._request("get_instance_info", {"uuid": uuid}, host=host))

    # --- volumes ---------------------------------------------------------------
    # Calls, all of them (with the long timeout): the scheduler records what
    # the backend answered.

    def create_volume(
        self, host: str, volume: dict[str, Any], image: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Call: make ``volume`` (id, backend, size_gb), empty or holding ``image``;
        returns it as the backend made it (id, backend, size_gb, format, location)."""
        return cast(
            dict[str, Any],
            self._long(host, "create_volume", present(volume=volume, image=image)),
        )

    def delete_volume(self, host: str, volume: dict[str, Any]) -> None:
        """Call: remove a volume from its backend (idempotent)."""
        self._long(host, "delete_volume", {"volume": volume})

    def resize_volume(
        self, host: str, volume: dict[str, Any], size_gb: int, uuid: str | None = None
    ) -> dict[str, Any]:
        """Call: grow a volume; with ``uuid`` (the server it is attached to),
        through the running guest so that it sees the new size."""
        return cast(
            dict[str, Any],
            self._long(host, "resize_volume", present(volume=volume, size_gb=size_gb, uuid=uuid)),
        )

    def attach_volume(self, host: str, uuid: str, volume: dict[str, Any]) -> dict[str, Any]:
        """Call: attach ``volume`` to the server (live if it runs); returns its target_dev."""
        return cast(
            dict[str, Any], self._long(host, "attach_volume", {"uuid": uuid, "volume": volume})
        )

    def detach_volume(self, host: str, uuid: str, volume: dict[str, Any]) -> None:
        """Call: detach ``volume``, waiting for the guest to release it."""
        self._long(host, "detach_volume", {"uuid": uuid, "volume": volume})

    def volume_snapshot(
        self, host: str, volume: dict[str, Any], action: str, name: str | None = None
    ) -> Any:
        """Call: create, list, revert or delete snapshots of a volume on its backend."""
        return self._long(host, "volume_snapshot", present(volume=volume, action=action, name=name))
