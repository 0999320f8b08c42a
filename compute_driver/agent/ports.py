"""The agent's port methods of the compute API (version 1.0): hot-plugged
interfaces and the tunnel topology.

The wiring itself (the host's network plugin, plugging, the topology in
revision order) is the host's: :class:`~compute_driver.agent.networks.HostNetworks`,
shared with the instance endpoint's builds.
"""

from __future__ import annotations

import logging
from typing import Any

import oslo_messaging as messaging

from compute_driver import exception
from compute_driver.agent.host import AgentHost, compute_method

LOG = logging.getLogger(__name__)


class PortEndpoint:
    """Serves ``update_topology`` and the interface methods of topic ``compute``."""

    target = messaging.Target(version="1.0")

    def __init__(self, host: AgentHost) -> None:
        self.host = host

    @compute_method
    def update_topology(
        self, ctxt: dict, network: dict[str, Any], remote_endpoints: list[str]
    ) -> None:
        if not self.host.networks.update_topology(network, remote_endpoints):
            LOG.info(
                "Network %s: topology revision %s is stale; ignored",
                network["name"],
                network.get("revision"),
            )
            return
        LOG.info(
            "Network %s: remote endpoints %s",
            network["name"],
            ", ".join(remote_endpoints) or "none",
        )

    @compute_method
    def attach_interface(self, ctxt: dict, uuid: str, port: dict[str, Any]) -> None:
        interface = self.host.networks.plug(uuid, (port,))[0]
        try:
            with self.host.instance_lock(uuid):
                self.host.driver.attach_interface(
                    uuid, interface, port["id"], port["network"]["id"], port["mac"]
                )
        except Exception:
            self.host.networks.unplug(uuid, [port])
            raise

    @compute_method
    def detach_interface(self, ctxt: dict, uuid: str, port: dict[str, Any]) -> None:
        timeout = self.host.conf.agent.volume_detach_timeout
        with self.host.instance_lock(uuid):
            try:
                self.host.driver.detach_interface(uuid, port["id"], timeout)
            except exception.InstanceNotFound:
                LOG.info("Detach of port %s from %s: no such guest here", port["id"], uuid)
        self.host.networks.unplug(uuid, [port])
