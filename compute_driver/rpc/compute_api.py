"""Client side of the compute API (topic ``compute``, server = host name).

Version history:
  1.0 - build_instance, delete_instance, get_console_output,
        get_instance_info, ping; stop/start/reboot/pause/unpause/
        suspend/resume_instance; snapshot_create/revert/delete_instance,
        list_instance_snapshots, get_diagnostics, export_root_disk.
"""

from __future__ import annotations

from typing import Any

from compute_driver.rpc.client import RPCClientBase

TOPIC = "compute"


class ComputeAPI(RPCClientBase):
    """What the scheduler (or any scheduler author's code) asks of an agent."""

    TOPIC = TOPIC
    API_VERSION = "1.0"
    CAP_OPTION = "compute"

    def ping(self, host: str) -> dict[str, Any]:
        """Call: the agent's name and API version; proves it listens."""
        return self._call("ping", {}, host=host)

    def build_instance(self, host: str, instance: dict[str, Any]) -> None:
        """Cast: build and start ``instance`` (idempotent by instance uuid)."""
        self._cast("build_instance", {"instance": instance}, host=host)

    def delete_instance(self, host: str, uuid: str) -> None:
        """Cast: destroy the instance and everything made for it (idempotent)."""
        self._cast("delete_instance", {"uuid": uuid}, host=host)

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
        return self._call("list_instance_snapshots", {"uuid": uuid}, host=host)

    def export_root_disk(self, host: str, uuid: str, path: str) -> dict[str, Any]:
        """Call (long): write a stopped instance's root disk, flattened, to ``path``."""
        return self._call(
            "export_root_disk",
            {"uuid": uuid, "path": path},
            host=host,
            timeout=self.conf.rpc.long_call_timeout,
        )

    def get_diagnostics(self, host: str, uuid: str) -> dict[str, Any]:
        """Call: CPU, memory, vCPU, disk and NIC counters of one instance."""
        return self._call("get_diagnostics", {"uuid": uuid}, host=host)

    def get_console_output(self, host: str, uuid: str, lines: int | None = None) -> str:
        """Call: the last ``lines`` lines of the serial console log."""
        payload: dict[str, Any] = {"uuid": uuid}
        if lines is not None:
            payload["lines"] = lines
        return self._call("get_console_output", payload, host=host)

    def get_instance_info(self, host: str, uuid: str) -> dict[str, Any]:
        """Call: power state and resources of one instance as libvirt sees it."""
        return self._call("get_instance_info", {"uuid": uuid}, host=host)
