"""The agent's topology updates: an older fan-out that arrives late is ignored."""

from __future__ import annotations

from agent_fakes import FakePlugin

from compute_driver.agent.ports import PortEndpoint

CTXT = {"request_id": "req-unit"}
NETWORK = {
    "id": "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10",
    "name": "n",
    "type": "vxlan",
    "segment": 5000,
    "physnet": None,
    "mtu": 1450,
}


def _update(endpoint: PortEndpoint, revision: int, remotes: list[str]) -> None:
    endpoint.update_topology(
        CTXT, network=dict(NETWORK, revision=revision), remote_endpoints=remotes
    )


def test_a_stale_topology_is_ignored_and_a_repeat_is_applied(make_host) -> None:
    plugin = FakePlugin()
    endpoint = PortEndpoint(make_host(plugin=plugin))
    _update(endpoint, 5, ["192.0.2.1", "192.0.2.2"])
    _update(endpoint, 4, ["192.0.2.1"])  # an older fan-out, overtaken
    _update(endpoint, 5, ["192.0.2.1", "192.0.2.2"])  # a repeat
    _update(endpoint, 6, [])
    assert plugin.topologies == [["192.0.2.1", "192.0.2.2"], ["192.0.2.1", "192.0.2.2"], []]


def test_a_resync_at_start_counts_as_the_revision_it_restored(make_host) -> None:
    """The start-up resync (the instance endpoint's reconcile) and the port
    endpoint's updates share one revision table: the host's."""
    plugin = FakePlugin()
    host = make_host(plugin=plugin)
    entry = {"network": dict(NETWORK, revision=7), "ports": [], "remote_endpoints": ["192.0.2.9"]}
    host.networks.resync([entry])
    _update(PortEndpoint(host), 6, ["192.0.2.1"])  # said before the restart, arriving late
    assert plugin.topologies == [["192.0.2.9"]]
