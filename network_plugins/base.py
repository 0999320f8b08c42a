"""The network plugin interface (namespace ``compute_driver.network``).

A plugin wires ports of tenant networks on one host and tells the virt
driver how to attach a port, as a libvirt interface builder. Each plugin
reads its own option group, named like its entry point.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from compute_driver import domain_xml as lvxml


@dataclass(frozen=True)
class Network:
    """A tenant network as the scheduler describes it."""

    id: str
    name: str
    type: str
    segment: int | None = None
    mtu: int = 1500
    # NOTE: flat and vlan networks name the physical network they ride on;
    # None means "the only one this host maps" (plugins refuse when ambiguous).
    physical_network: str | None = None


@dataclass(frozen=True)
class Port:
    """One interface of an instance on a network."""

    id: str
    network: Network
    mac: str
    addresses: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Description:
    """What :meth:`NetworkPlugin.describe` returns: the plugin and its abilities."""

    name: str
    #: Network types offered (``flat``, ``vlan``, ``vxlan``, ...).
    network_types: tuple[str, ...]
    anti_spoofing: bool = False
    tunnels: bool = False
    #: :meth:`NetworkPlugin.check_and_resync` does something.
    resync: bool = False

    def to_wire(self) -> dict[str, Any]:
        """The plain-dict form, for messages and logs."""
        wire = dataclasses.asdict(self)
        wire["network_types"] = list(self.network_types)
        return wire


class NetworkPlugin(abc.ABC):
    """Wires ports of tenant networks on one host."""

    name = ""

    @abc.abstractmethod
    def describe(self) -> Description:
        """The plugin's name, the network types it offers and its abilities."""

    @abc.abstractmethod
    def ensure_network(self, network: Network) -> None:
        """Create what ``network`` needs on this host (idempotent).

        :raises NetworkError: the host cannot carry this network.
        """

    @abc.abstractmethod
    def plug(self, port: Port, instance_uuid: str) -> None:
        """Prepare ``port`` of an instance before the guest starts (idempotent).

        :raises NetworkError: nothing is left half-plugged.
        """

    @abc.abstractmethod
    def unplug(self, port: Port, instance_uuid: str) -> None:
        """Undo :meth:`plug`. Idempotent."""

    @abc.abstractmethod
    def interface_config(self, port: Port) -> lvxml.Interface:
        """The libvirt interface builder that attaches the guest to ``port``."""

    @abc.abstractmethod
    def update_topology(self, network: Network, remote_endpoints: list[str]) -> None:
        """Set the tunnel endpoints of other hosts that have ports on ``network``."""

    @abc.abstractmethod
    def delete_network(self, network: Network) -> None:
        """Remove what :meth:`ensure_network` made. Idempotent."""

    def tunnel_endpoint(self) -> str | None:
        """This host's address for the tunnels of this plugin's networks.

        The agent reports it with the host's capabilities; the scheduler
        hands it to the other hosts of a tunnelled network
        (:meth:`update_topology`). The default has no tunnels.

        :returns: the address (e.g. ``[<plugin>] local_ip``), or None when
            this host has none.
        """
        return None

    def check_and_resync(self) -> bool:
        """Reprogram what the datapath or the host lost: rules (its switch daemon
        restarted), the devices and switch ports of plugged ports (a host
        reboot, or something else removed or changed them).

        Called periodically by the agent when ``describe().resync``, and
        before a guest starts again (start, reboot, resume); returns whether
        anything was reprogrammed. The default has nothing to check.

        :raises NetworkError: the datapath cannot be reached.
        """
        return False
