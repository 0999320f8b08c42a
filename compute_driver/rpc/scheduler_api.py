"""Client side of the scheduler API (topic ``scheduler``).

Version history:
  1.0 - servers (create, list, show, delete, actions, console log), hosts, flavors,
        images; agent reports (report_host, instance_update,
        instance_deleted, host_instances).
"""

from __future__ import annotations

from typing import Any

from compute_driver.rpc.client import RPCClientBase

TOPIC = "scheduler"


class SchedulerAPI(RPCClientBase):
    """Every scheduler method, one Python method each.

    Calls return plain dicts (the stable shapes documented in
    docs/rpc-api.md) or raise the typed errors of compute_driver.exception.
    """

    TOPIC = TOPIC
    API_VERSION = "1.0"
    CAP_OPTION = "scheduler"

    def call(self, method: str, **kwargs: Any) -> Any:
        """Call ``method`` with keyword arguments, leaving out those that are None."""
        return self._call(method, {k: v for k, v in kwargs.items() if v is not None})

    # Agent side: reports are casts, so a slow scheduler never stalls an agent.
    def report_host(self, host: str, resources: dict, capabilities: dict, instances: list) -> None:
        """Cast: this host's resources, capabilities and instance power states."""
        self._cast(
            "report_host",
            {
                "host": host,
                "resources": resources,
                "capabilities": capabilities,
                "instances": instances,
            },
        )

    def instance_update(
        self,
        host: str,
        uuid: str,
        vm_state: str,
        power_state: str | None = None,
        fault: str | None = None,
    ) -> None:
        """Cast: an instance reached ``vm_state`` on ``host``."""
        payload: dict[str, Any] = {"host": host, "uuid": uuid, "vm_state": vm_state}
        if power_state is not None:
            payload["power_state"] = power_state
        if fault is not None:
            payload["fault"] = fault[:1024]
        self._cast("instance_update", payload)

    def set_host_enabled_automatically(self, host: str, enabled: bool, reason: str) -> None:
        """Cast: the agent's hypervisor went away (or came back)."""
        self._cast(
            "set_host_enabled",
            {"host": host, "enabled": enabled, "reason": reason[:1024], "automatic": True},
        )

    def instance_power_changed(self, host: str, uuid: str, power_state: str) -> None:
        """Cast: a guest changed power state with no task of ours in flight."""
        self._cast(
            "instance_power_changed", {"host": host, "uuid": uuid, "power_state": power_state}
        )

    def instance_deleted(self, host: str, uuid: str) -> None:
        """Cast: the instance is gone from ``host``."""
        self._cast("instance_deleted", {"host": host, "uuid": uuid})

    def host_networks(self, host: str) -> list[dict[str, Any]]:
        """Call: the networks with ports on ``host``, each with its remote endpoints."""
        return self._call("host_networks", {"host": host})

    def host_instances(self, host: str) -> list[dict[str, Any]]:
        """Call: the instances the scheduler believes are on ``host``."""
        return self._call("host_instances", {"host": host})
