"""The agent's network side: plugging a server's ports, and the tunnel topology.

Ports arrive in the build payload (the scheduler allocated them); the host's
network plugin (the first of ``[agent] network_plugins``) wires them before
the guest runs. The scheduler casts ``update_topology`` when a network gains
or loses a port on another host, and a starting agent asks for its whole
view (``host_networks``) so nothing said while it was away is lost.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import oslo_messaging as messaging

from compute_driver import exception
from compute_driver.agent.host import EndpointHost
from compute_driver.agent.requests import compute_method
from network_plugins import base as net_base

LOG = logging.getLogger(__name__)


def network_of(payload: dict[str, Any]) -> net_base.Network:
    """A ``schemas.NETWORK`` payload as the plugins take it."""
    return net_base.Network(
        id=payload["id"],
        name=payload["name"],
        type=payload["type"],
        segment=payload.get("segment"),
        mtu=payload["mtu"],
        physical_network=payload.get("physnet"),
    )


def port_of(payload: dict[str, Any]) -> net_base.Port:
    """A ``schemas.PORT`` payload as the plugins take it."""
    return net_base.Port(
        id=payload["id"],
        network=network_of(payload["network"]),
        mac=payload["mac"],
        addresses=(payload["address"],),
    )


class PortEndpoint:
    """Serves ``update_topology`` of topic ``compute``; plugs ports for builds."""

    target = messaging.Target(version="1.0")

    def __init__(self, manager: EndpointHost) -> None:
        self.manager = manager
        #: Network id -> revision of the topology last applied.
        self._revisions: dict[str, int] = {}
        self._revisions_lock = threading.Lock()

    def _newer(self, network: dict[str, Any]) -> bool:
        """Record ``network``'s revision if it is not older than the last one applied.

        Call with ``_revisions_lock`` held, together with the apply.
        """
        revision = int(network.get("revision") or 0)
        known = self._revisions.get(network["id"], 0)
        if revision < known:
            return False
        self._revisions[network["id"]] = revision
        return True

    @property
    def plugin(self) -> Any:
        """This host's network plugin.

        :raises PluginNotFound: the host has none.
        """
        names = self.manager.conf.agent.network_plugins
        if not names or names[0] not in self.manager.networks:
            raise exception.PluginNotFound(family="network", name="(none)", available="")
        return self.manager.networks[names[0]]

    def tunnel_ip(self) -> str | None:
        """This host's tunnel endpoint: the ``local_ip`` of its network plugin's group."""
        names = self.manager.conf.agent.network_plugins
        group = getattr(self.manager.conf, names[0], None) if names else None
        ip = getattr(group, "local_ip", None) if group is not None else None
        return str(ip) if ip else None

    def plug(self, uuid: str, ports: tuple[dict[str, Any], ...]) -> list[Any]:
        """Wire ``ports`` of server ``uuid``; returns their interface builders.

        :raises NetworkError: nothing stays plugged.
        """
        interfaces: list[Any] = []
        plugged: list[net_base.Port] = []
        try:
            for payload in ports:
                port = port_of(payload)
                self.plugin.ensure_network(port.network)
                self.plugin.plug(port, uuid)
                plugged.append(port)
                interfaces.append(self.plugin.interface_config(port))
        except Exception:
            self._unplug(uuid, plugged)
            raise
        return interfaces

    def ensure_plugged(self) -> None:
        """Before a guest starts again: put back what this host's ports lost.

        NOTE: the plugin's :meth:`~network_plugins.base.NetworkPlugin.check_and_resync`
        (taps, switch ports and rules that something removed or changed, e.g.
        a host reboot removes the ``ovs`` plugin's taps), at once rather than
        at the next periodic run, so that the start finds them. Errors are
        logged: the start then succeeds or fails on its own.
        """
        try:
            plugin = self.plugin
        except exception.PluginNotFound:
            return
        if not plugin.describe().resync:
            return
        try:
            plugin.check_and_resync()
        except exception.ComputeDriverError:
            LOG.exception("Could not check this host's ports before a start")

    def unplug(self, uuid: str, ports: list[dict[str, Any]]) -> None:
        """Undo :meth:`plug` (idempotent); errors are logged, not raised."""
        self._unplug(uuid, [port_of(p) for p in ports])

    def _unplug(self, uuid: str, ports: list[net_base.Port]) -> None:
        for port in ports:
            try:
                self.plugin.unplug(port, uuid)
            except exception.ComputeDriverError:
                LOG.exception("Could not unplug port %s of server %s", port.id, uuid)

    @compute_method
    def update_topology(
        self, ctxt: dict, network: dict[str, Any], remote_endpoints: list[str]
    ) -> None:
        net = network_of(network)
        # NOTE: check and apply under one lock: two casts for one network
        # may be served by two threads, and the older must not win.
        with self._revisions_lock:
            if not self._newer(network):
                LOG.info(
                    "Network %s: topology revision %s is stale; ignored",
                    net.name,
                    network.get("revision"),
                )
                return
            self.plugin.update_topology(net, remote_endpoints)
        LOG.info("Network %s: remote endpoints %s", net.name, ", ".join(remote_endpoints) or "none")

    @compute_method
    def attach_interface(self, ctxt: dict, uuid: str, port: dict[str, Any]) -> None:
        interface = self.plug(uuid, (port,))[0]
        try:
            with self.manager._instance_lock(uuid):
                self.manager.driver.attach_interface(
                    uuid, interface, port["id"], port["network"]["id"], port["mac"]
                )
        except Exception:
            self.unplug(uuid, [port])
            raise

    @compute_method
    def detach_interface(self, ctxt: dict, uuid: str, port: dict[str, Any]) -> None:
        timeout = self.manager.conf.agent.volume_detach_timeout
        with self.manager._instance_lock(uuid):
            try:
                self.manager.driver.detach_interface(uuid, port["id"], timeout)
            except exception.InstanceNotFound:
                LOG.info("Detach of port %s from %s: no such guest here", port["id"], uuid)
        self.unplug(uuid, [port])

    def resync(self) -> None:
        """At start: rebuild this host's networks, ports and tunnels from the scheduler.

        NOTE: plugging is idempotent; it also tells a plugin that keeps its
        ports in memory which ports exist, so that unplugging one later does
        not tear down a network other guests still use.
        """
        for entry in self.manager._reconcile_scheduler.host_networks(self.manager.host):
            net = network_of(entry["network"])
            with self._revisions_lock:
                self._newer(entry["network"])
            try:
                self.plugin.ensure_network(net)
                for item in entry["ports"]:
                    self.plugin.plug(port_of(item["port"]), item["instance"])
                self.plugin.update_topology(net, entry["remote_endpoints"])
            except exception.ComputeDriverError:
                LOG.exception("Could not restore network %s", net.name)
