"""The agent's topology updates: an older fan-out that arrives late is ignored."""

from __future__ import annotations

import types
from typing import Any

from compute_driver.agent.ports import PortEndpoint

NETWORK = {
    "id": "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10",
    "name": "n",
    "type": "vxlan",
    "segment": 5000,
    "physnet": None,
    "mtu": 1450,
}


class RecordingPlugin:
    """Stands in for a network plugin: keeps the lists it was given."""

    def __init__(self) -> None:
        self.lists: list[list[str]] = []

    def update_topology(self, network: Any, remote_endpoints: list[str]) -> None:
        self.lists.append(remote_endpoints)


def _endpoint() -> tuple[PortEndpoint, RecordingPlugin]:
    plugin = RecordingPlugin()
    manager = types.SimpleNamespace(
        conf=types.SimpleNamespace(agent=types.SimpleNamespace(network_plugins=["rec"])),
        networks={"rec": plugin},
        request_key=None,  # requests unsigned, as with no [agent_reports] key
    )
    return PortEndpoint(manager), plugin  # type: ignore[arg-type]


def _update(endpoint: PortEndpoint, revision: int, remotes: list[str]) -> None:
    type(endpoint).update_topology.__wrapped__(
        endpoint, {}, network=dict(NETWORK, revision=revision), remote_endpoints=remotes
    )


def test_a_stale_topology_is_ignored_and_a_repeat_is_applied() -> None:
    endpoint, plugin = _endpoint()
    _update(endpoint, 5, ["192.0.2.1", "192.0.2.2"])
    _update(endpoint, 4, ["192.0.2.1"])  # an older fan-out, overtaken
    _update(endpoint, 5, ["192.0.2.1", "192.0.2.2"])  # a repeat
    _update(endpoint, 6, [])
    assert plugin.lists == [["192.0.2.1", "192.0.2.2"], ["192.0.2.1", "192.0.2.2"], []]
