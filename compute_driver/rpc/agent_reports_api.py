"""Client side of the agent reports API (topic ``agent_reports``), for agents.

The scheduler serves it on a topic of its own, apart from the public
``scheduler`` topic: the broker's topic permissions let only agents publish
here (tools/rabbitmq-users.sh), so a client credential cannot report.

An agent reports only for its own host: every payload carries
``signature`` = {``timestamp``, ``hmac``}, an HMAC-SHA256 of the method,
the timestamp and the payload under the key of the host the payload names,
a key derived from the scheduler's ``[agent_reports] secret`` and the host
name (`python -m compute_driver.rpc.report_signing HOST < secret` prints
it). With the secret set, the scheduler refuses (one log line, nothing
changed) a report that is unsigned, signed with another host's key, or
whose timestamp is more than 300 s from its clock. Why signatures and not
per-host routing keys: oslo.messaging binds each topic with a fixed key and
hands an endpoint neither the routing key nor the broker user a message
came from, so a topic permission per host could limit where an agent
publishes but could never tell the scheduler which host sent a report.

Version history:
  1.0 - report_host, instance_update, set_host_enabled (automatic),
        instance_power_changed, instance_deleted (casts); host_networks,
        host_instances (calls). Until issue 12 these were methods of the
        scheduler API 1.0 on topic ``scheduler``, which no longer answers
        them: upgrade the agents with the scheduler.
"""

from __future__ import annotations

from typing import Any, cast

from oslo_config import cfg

from compute_driver.rpc import report_signing, schemas
from compute_driver.rpc.client import RPCClientBase
from compute_driver.rpc.context import RequestContext

TOPIC = "agent_reports"


class AgentReportsAPI(RPCClientBase):
    """What an agent tells (and asks) the scheduler about its own host."""

    TOPIC = TOPIC
    API_VERSION = "1.0"
    # NOTE: the scheduler serves both topics, so one cap serves both.
    CAP_OPTION = "scheduler"
    METHODS = schemas.REPORT_METHODS
    CASTS = schemas.REPORT_CASTS

    def __init__(
        self,
        conf: cfg.ConfigOpts = cfg.CONF,
        timeout: int | None = None,
        context: RequestContext | None = None,
    ) -> None:
        super().__init__(conf, timeout, context)
        #: This host's report key; None sends reports unsigned.
        self._key: str | None = report_signing.configured_key(conf)
        self.signer = self._sign

    def _sign(
        self, method: str, context: dict[str, Any], payload: dict[str, Any], host: str | None
    ) -> dict[str, Any]:
        if self._key is None:
            return payload
        return report_signing.sign(self._key, method, payload)

    # Reports are casts, so a slow scheduler never stalls an agent.
    def report_host(
        self,
        host: str,
        resources: dict[str, Any],
        capabilities: dict[str, Any],
        instances: list[dict[str, Any]],
    ) -> None:
        """Cast: this host's resources, capabilities and instance power states."""
        self._request(
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
        self._request("instance_update", payload)

    def set_host_enabled_automatically(self, host: str, enabled: bool, reason: str) -> None:
        """Cast: the agent's hypervisor went away (or came back)."""
        self._request(
            "set_host_enabled", {"host": host, "enabled": enabled, "reason": reason[:1024]}
        )

    def instance_power_changed(self, host: str, uuid: str, power_state: str) -> None:
        """Cast: a guest changed power state with no task of ours in flight."""
        self._request(
            "instance_power_changed", {"host": host, "uuid": uuid, "power_state": power_state}
        )

    def instance_deleted(self, host: str, uuid: str) -> None:
        """Cast: the instance is gone from ``host``."""
        self._request("instance_deleted", {"host": host, "uuid": uuid})

    def host_networks(self, host: str) -> list[dict[str, Any]]:
        """Call: the networks with ports on ``host``, each with its remote endpoints."""
        return cast(list[dict[str, Any]], self._request("host_networks", {"host": host}))

    def host_instances(self, host: str) -> list[dict[str, Any]]:
        """Call: the instances the scheduler believes are on ``host``."""
        return cast(list[dict[str, Any]], self._request("host_instances", {"host": host}))
