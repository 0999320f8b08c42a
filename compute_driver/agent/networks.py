"""This host's network plugins, and the port wiring every endpoint shares.

Ports arrive in the build payload (the scheduler allocated them); the host's
network plugin (the first of ``[agent] network_plugins``) wires them before
the guest runs. The instance endpoint plugs them for builds and reboots, the
port endpoint for hot-plugs; both through :class:`HostNetworks`, which the
host object holds. The scheduler casts ``update_topology`` when a network
gains or loses a port on another host, and a starting agent asks for its
whole view (``host_networks``) so nothing said while it was away is lost:
both are applied here, in revision order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from compute_driver import exception
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


class HostNetworks(Mapping[str, net_base.NetworkPlugin]):
    """This host's network plugins by name; the first configured one wires ports.

    :param plugins: the loaded plugins by name.
    :param order: ``[agent] network_plugins``: the first names the host's plugin.
    """

    def __init__(self, plugins: Mapping[str, net_base.NetworkPlugin], order: Sequence[str]) -> None:
        self._plugins = dict(plugins)
        self._order = list(order)
        #: Network id -> revision of the topology last applied.
        self._revisions: dict[str, int] = {}
        self._revisions_lock = threading.Lock()

    def __getitem__(self, name: str) -> net_base.NetworkPlugin:
        return self._plugins[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._plugins)

    def __len__(self) -> int:
        return len(self._plugins)

    @property
    def plugin(self) -> net_base.NetworkPlugin:
        """This host's network plugin.

        :raises PluginNotFound: the host has none.
        """
        if not self._order or self._order[0] not in self._plugins:
            raise exception.PluginNotFound(family="network", name="(none)", available="")
        return self._plugins[self._order[0]]

    def tunnel_endpoint(self) -> str | None:
        """This host's tunnel endpoint, as its network plugin reports it (None: none)."""
        try:
            plugin = self.plugin
        except exception.PluginNotFound:
            return None
        return plugin.tunnel_endpoint()

    def plug(self, uuid: str, ports: Sequence[dict[str, Any]]) -> list[Any]:
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

    def unplug(self, uuid: str, ports: Sequence[dict[str, Any]]) -> None:
        """Undo :meth:`plug` (idempotent); errors are logged, not raised."""
        self._unplug(uuid, [port_of(p) for p in ports])

    def _unplug(self, uuid: str, ports: list[net_base.Port]) -> None:
        for port in ports:
            try:
                self.plugin.unplug(port, uuid)
            except exception.ComputeDriverError:
                LOG.exception("Could not unplug port %s of server %s", port.id, uuid)

    # --- topology ----------------------------------------------------------------

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

    def update_topology(self, network: dict[str, Any], remote_endpoints: list[str]) -> bool:
        """Give the plugin the other hosts' tunnel endpoints on ``network``
        (a ``schemas.NETWORK`` payload with its revision), unless a newer
        revision was applied already.

        :returns: whether it was applied (False: stale, ignored).
        """
        net = network_of(network)
        # NOTE: check and apply under one lock: two casts for one network
        # may be served by two threads, and the older must not win.
        with self._revisions_lock:
            if not self._newer(network):
                return False
            self.plugin.update_topology(net, remote_endpoints)
        return True

    def resync(self, entries: list[dict[str, Any]]) -> None:
        """At start: rebuild this host's networks, ports and tunnels from the
        scheduler's view (``host_networks``).

        NOTE: plugging is idempotent; it also tells a plugin that keeps its
        ports in memory which ports exist, so that unplugging one later does
        not tear down a network other guests still use.
        """
        for entry in entries:
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
