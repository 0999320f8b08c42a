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

from typing import Any, cast

from oslo_config import cfg

from compute_driver.rpc import report_signing
from compute_driver.rpc.client import RPCClientBase
from compute_driver.rpc.context import RequestContext

TOPIC = "compute"


class ComputeAPI(RPCClientBase):
    """What the scheduler (or any scheduler author's code) asks of an agent."""

    TOPIC = TOPIC
    API_VERSION = "1.0"
    CAP_OPTION = "compute"

    def __init__(
        self,
        conf: cfg.ConfigOpts = cfg.CONF,
        timeout: int | None = None,
        context: RequestContext | None = None,
    ) -> None:
        super().__init__(conf, timeout, context)
        #: The secret host keys derive from; None sends requests unsigned.
        self._secret: str | None = conf.agent_reports.secret or None

    # NOTE: every request is signed with the key of the host it goes to
    # (report_signing.py): no other agent can make one an agent accepts.
    def _signed(self, host: str | None, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self._secret is None or host is None:
            return payload
        return report_signing.sign_request(self._secret, host, method, payload)

    def _call(
        self,
        method: str,
        payload: dict[str, Any],
        host: str | None = None,
        version: str = "1.0",
        timeout: int | None = None,
    ) -> Any:
        return super()._call(method, self._signed(host, method, payload), host, version, timeout)

    def _cast(
        self, method: str, payload: dict[str, Any], host: str | None = None, version: str = "1.0"
    ) -> None:
        super()._cast(method, self._signed(host, method, payload), host, version)

    def ping(self, host: str) -> dict[str, Any]:
        """Call: the agent's name and API version; proves it listens."""
        return cast(dict[str, Any], self._call("ping", {}, host=host))

    def build_instance(self, host: str, instance: dict[str, Any]) -> None:
        """Cast: build and start ``instance`` (idempotent by instance uuid)."""
        self._cast("build_instance", {"instance": instance}, host=host)

    def delete_instance(
        self, host: str, uuid: str, ports: list[dict[str, Any]] | None = None
    ) -> None:
        """Cast: destroy the instance and everything made for it, unplugging
        ``ports`` (idempotent)."""
        payload: dict[str, Any] = {"uuid": uuid}
        if ports:
            payload["ports"] = ports
        self._cast("delete_instance", payload, host=host)

    def attach_interface(self, host: str, uuid: str, port: dict[str, Any]) -> None:
        """Call: plug ``port`` and attach its NIC to the server (live if it runs)."""
        self._call(
            "attach_interface",
            {"uuid": uuid, "port": port},
            host=host,
            timeout=self.conf.rpc.long_call_timeout,
        )

    def detach_interface(self, host: str, uuid: str, port: dict[str, Any]) -> None:
        """Call: detach the port's NIC once the guest released it, and unplug it."""
        self._call(
            "detach_interface",
            {"uuid": uuid, "port": port},
            host=host,
            timeout=self.conf.rpc.long_call_timeout,
        )

    def update_topology(
        self, host: str, network: dict[str, Any], remote_endpoints: list[str]
    ) -> None:
        """Cast: the tunnel endpoints of the other hosts with ports on ``network``."""
        self._cast(
            "update_topology",
            {"network": network, "remote_endpoints": remote_endpoints},
            host=host,
        )

    def stop_instance(self, host: str, uuid: str, timeout: int | None = None) -> None:
        """Cast: ACPI shutdown, forced off after ``timeout`` s (default: the agent's option)."""
        payload: dict[str, Any] = {"uuid": uuid}
        if timeout is not None:
            payload["timeout"] = timeout
        self._cast("stop_instance", payload, host=host)

    def reboot_instance(
        self, host: str, uuid: str, hard: bool, instance: dict[str, Any] | None = None
    ) -> None:
        """Cast: soft (ACPI, falling back to hard) or hard reboot; with
        ``instance`` (the build payload), a hard reboot writes the domain afresh."""
        payload: dict[str, Any] = {"uuid": uuid, "hard": hard}
        if instance is not None:
            payload["instance"] = instance
        self._cast("reboot_instance", payload, host=host)

    def instance_action(self, host: str, uuid: str, method: str) -> None:
        """Cast one of start/pause/unpause/suspend/resume ``_instance``."""
        self._cast(method, {"uuid": uuid}, host=host)

    def snapshot_instance(self, host: str, method: str, uuid: str, **payload: Any) -> None:
        """Cast one of snapshot_create/revert/delete_instance."""
        self._cast(method, {"uuid": uuid, **payload}, host=host)

    def list_instance_snapshots(self, host: str, uuid: str) -> list[dict[str, Any]]:
        """Call: the server's snapshots, oldest first, with parents and children."""
        return cast(
            list[dict[str, Any]], self._call("list_instance_snapshots", {"uuid": uuid}, host=host)
        )

    def export_root_disk(self, host: str, uuid: str, image: str) -> dict[str, Any]:
        """Call (long): write a stopped instance's root disk, flattened, as the
        disk of new image ``image`` (into the export directory the agent
        derives from its image store and that UUID; no path travels)."""
        return cast(
            dict[str, Any],
            self._call(
                "export_root_disk",
                {"uuid": uuid, "image": image},
                host=host,
                timeout=self.conf.rpc.long_call_timeout,
            ),
        )

    def get_diagnostics(self, host: str, uuid: str) -> dict[str, Any]:
        """Call: CPU, memory, vCPU, disk and NIC counters of one instance."""
        return cast(dict[str, Any], self._call("get_diagnostics", {"uuid": uuid}, host=host))

    def get_console_output(self, host: str, uuid: str, lines: int | None = None) -> str:
        """Call: the last ``lines`` lines of the serial console log."""
        payload: dict[str, Any] = {"uuid": uuid}
        if lines is not None:
            payload["lines"] = lines
        return cast(str, self._call("get_console_output", payload, host=host))

    def get_instance_info(self, host: str, uuid: str) -> dict[str, Any]:
        """Call: power state and resources of one instance as libvirt sees it."""
        return cast(dict[str, Any], self._call("get_instance_info", {"uuid": uuid}, host=host))

    # --- volumes ---------------------------------------------------------------
    # Calls, all of them: the scheduler records what the backend answered.
    # They take the long timeout: a copy, a resize or a guest releasing a
    # disk may take minutes.

    def _long_call(self, host: str, method: str, payload: dict[str, Any]) -> Any:
        return self._call(method, payload, host=host, timeout=self.conf.rpc.long_call_timeout)

    def create_volume(
        self, host: str, volume: dict[str, Any], image: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Call: make ``volume`` (id, backend, size_gb), empty or holding ``image``;
        returns it as the backend made it (id, backend, size_gb, format, location)."""
        payload: dict[str, Any] = {"volume": volume}
        if image is not None:
            payload["image"] = image
        return cast(dict[str, Any], self._long_call(host, "create_volume", payload))

    def delete_volume(self, host: str, volume: dict[str, Any]) -> None:
        """Call: remove a volume from its backend (idempotent)."""
        self._long_call(host, "delete_volume", {"volume": volume})

    def resize_volume(
        self, host: str, volume: dict[str, Any], size_gb: int, uuid: str | None = None
    ) -> dict[str, Any]:
        """Call: grow a volume; with ``uuid`` (the server it is attached to),
        through the running guest so that it sees the new size."""
        payload: dict[str, Any] = {"volume": volume, "size_gb": size_gb}
        if uuid is not None:
            payload["uuid"] = uuid
        return cast(dict[str, Any], self._long_call(host, "resize_volume", payload))

    def attach_volume(self, host: str, uuid: str, volume: dict[str, Any]) -> dict[str, Any]:
        """Call: attach ``volume`` to the server (live if it runs); returns its target_dev."""
        return cast(
            dict[str, Any], self._long_call(host, "attach_volume", {"uuid": uuid, "volume": volume})
        )

    def detach_volume(self, host: str, uuid: str, volume: dict[str, Any]) -> None:
        """Call: detach ``volume``, waiting for the guest to release it."""
        self._long_call(host, "detach_volume", {"uuid": uuid, "volume": volume})

    def volume_snapshot(
        self, host: str, volume: dict[str, Any], action: str, name: str | None = None
    ) -> Any:
        """Call: create, list, revert or delete snapshots of a volume on its backend."""
        payload: dict[str, Any] = {"volume": volume, "action": action}
        if name is not None:
            payload["name"] = name
        return self._long_call(host, "volume_snapshot", payload)
