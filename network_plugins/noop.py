"""The ``noop`` network plugin: records ports, wires nothing.

For the embedded demo and for tests of the other parts. Its interfaces are
``type='ethernet'`` taps that nothing connects to: isolated, never on the
host's network.
"""

from __future__ import annotations

import threading

from oslo_config import cfg

from compute_driver import domain_xml as lvxml
from network_plugins import base


def list_opts() -> dict:
    return {}


class NoopNetworkPlugin(base.NetworkPlugin):
    """Keeps ports in memory."""

    name = "noop"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self._lock = threading.Lock()
        self.networks: dict[str, base.Network] = {}
        self.ports: dict[str, str] = {}  # port id -> instance uuid

    def describe(self) -> base.Description:
        return base.Description(name=self.name, network_types=("flat",))

    def ensure_network(self, network: base.Network) -> None:
        with self._lock:
            self.networks[network.id] = network

    def plug(self, port: base.Port, instance_uuid: str) -> None:
        with self._lock:
            self.ports[port.id] = instance_uuid

    def unplug(self, port: base.Port, instance_uuid: str) -> None:
        with self._lock:
            self.ports.pop(port.id, None)

    def interface_config(self, port: base.Port) -> lvxml.Interface:
        return lvxml.Interface(type="ethernet", mac=port.mac, model="virtio")

    def update_topology(self, network: base.Network, remote_endpoints: list[str]) -> None:
        return None  # no tunnels to keep

    def delete_network(self, network: base.Network) -> None:
        with self._lock:
            self.networks.pop(network.id, None)
