"""The agent's endpoints over one host object (issue 14, fault 2).

Each endpoint receives the :class:`~compute_driver.agent.host.AgentHost`
and nothing else: the instance lock they share, the request key, the
backends and the network plugin are the host's; the tunnel endpoint in the
host report is what the network plugin says it is.
"""

from __future__ import annotations

import ast
import pathlib
import uuid as uuidlib

import oslo_messaging as messaging
import pytest
from agent_fakes import HOST, FakeBackend, FakePlugin
from oslo_config import cfg

import compute_driver.agent
from compute_driver.agent.manager import ComputeManager
from compute_driver.agent.ports import PortEndpoint
from compute_driver.agent.volumes import VolumeEndpoint
from compute_driver.rpc import report_signing
from network_plugins import linux_bridge, ovs

CTXT = {"request_id": "req-unit"}
SERVER = str(uuidlib.uuid4())
NETWORK = {
    "id": "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10",
    "name": "n",
    "type": "vxlan",
    "segment": 5000,
    "mtu": 1450,
}
PORT = {
    "id": "9f2c6a1e-0000-4000-8000-0000000000aa",
    "network": NETWORK,
    "mac": "fa:16:3e:00:00:01",
    "address": "10.0.0.5/24",
}


def _capabilities(host) -> dict:  # type: ignore[no-untyped-def]
    ComputeManager(host).report()
    ((method, report),) = host.scheduler.reports
    assert method == "report_host"
    return report["capabilities"]  # type: ignore[no-any-return]


def test_the_report_carries_the_tunnel_endpoint_the_plugin_reports(make_host) -> None:
    # NOTE: no [rec] option group exists: the plugin's answer is all there is.
    assert _capabilities(make_host(plugin=FakePlugin("192.0.2.7")))["tunnel_ip"] == "192.0.2.7"


def test_a_plugin_without_tunnels_reports_none(make_host) -> None:
    assert "tunnel_ip" not in _capabilities(make_host(plugin=FakePlugin(None)))


def test_a_plugin_that_is_not_loaded_reports_no_tunnel(make_host) -> None:
    host = make_host(overrides={("agent", "network_plugins"): ["absent"]})
    assert "tunnel_ip" not in _capabilities(host)


# NOTE: option groups of the test's own ConfigOpts: oslo.config keeps overrides
# in the registered group object, which the plugin modules' GROUP would share.
def _ovs(conf: cfg.ConfigOpts) -> ovs.OvsNetworkPlugin:
    conf.register_group(cfg.OptGroup("ovs"))
    conf.register_opts(ovs.OPTS, group="ovs")
    conf.set_override("ovsdb_connection", "unix:/nonexistent/cdt-db.sock", group="ovs")
    return ovs.OvsNetworkPlugin(conf)


def _linux_bridge(conf: cfg.ConfigOpts) -> linux_bridge.LinuxBridgePlugin:
    conf.register_group(cfg.OptGroup("linux_bridge"))
    conf.register_opts(linux_bridge.OPTS, group="linux_bridge")
    return linux_bridge.LinuxBridgePlugin(conf, netlink_api=object())  # type: ignore[arg-type]


@pytest.mark.parametrize("make, group", [(_ovs, "ovs"), (_linux_bridge, "linux_bridge")])
def test_the_tunnelling_plugins_report_their_local_ip(make, group) -> None:
    conf = cfg.ConfigOpts()
    conf([], project="unit", default_config_files=[])
    plugin = make(conf)
    assert plugin.tunnel_endpoint() is None
    conf.set_override("local_ip", "192.0.2.8", group=group)
    assert plugin.tunnel_endpoint() == "192.0.2.8"


def test_every_endpoint_changes_a_guest_under_the_hosts_instance_lock(make_host) -> None:
    backend = FakeBackend()
    host = make_host(backend=backend)
    backend.create_volume("v1", 1)
    volume = {"id": "v1", "backend": "fake", "size_gb": 1}
    volumes, ports = VolumeEndpoint(host), PortEndpoint(host)
    volumes.attach_volume(CTXT, uuid=SERVER, volume=volume)
    volumes.resize_volume(CTXT, volume=volume, size_gb=2, uuid=SERVER)
    volumes.detach_volume(CTXT, uuid=SERVER, volume=volume)
    ports.attach_interface(CTXT, uuid=SERVER, port=PORT)
    ports.detach_interface(CTXT, uuid=SERVER, port=PORT)
    assert host.driver.calls == [
        ("attach_volume", SERVER, True),
        ("extend_volume", SERVER, True),
        ("detach_volume", SERVER, True),
        ("attach_interface", SERVER, True),
        ("detach_interface", SERVER, True),
    ]
    assert not host.instance_lock(SERVER).locked()


def _code(error: messaging.ExpectedException) -> str:
    return error.__cause__.code  # type: ignore[union-attr,no-any-return]


@pytest.mark.parametrize(
    "endpoint, method, payload",
    [
        (ComputeManager, "ping", {}),
        (VolumeEndpoint, "delete_volume", {"volume": {"id": "v1", "backend": "fake"}}),
        (PortEndpoint, "update_topology", {"network": NETWORK, "remote_endpoints": []}),
    ],
)
def test_with_a_key_every_endpoint_refuses_what_the_scheduler_did_not_sign(
    make_host, endpoint, method, payload
) -> None:
    plugin, backend = FakePlugin(), FakeBackend()
    host = make_host(plugin=plugin, backend=backend, overrides={("agent_reports", "secret"): "s"})
    serve = getattr(endpoint(host), method)
    # The schema comes first: a malformed request is refused as such.
    with pytest.raises(messaging.ExpectedException) as info:
        serve(CTXT, **dict(payload, bogus=1))
    assert _code(info.value) == "invalid_payload"
    with pytest.raises(messaging.ExpectedException) as info:
        serve(CTXT, **payload)
    assert _code(info.value) == "request_refused"
    forged = report_signing.sign_request("other", HOST, method, payload)
    with pytest.raises(messaging.ExpectedException) as info:
        serve(CTXT, **forged)
    assert _code(info.value) == "request_refused"
    assert plugin.topologies == [] and backend.calls == []
    serve(CTXT, **report_signing.sign_request("s", HOST, method, payload))
    assert len(plugin.topologies) + len(backend.calls) == (method != "ping")


ENDPOINTS = ("manager", "ports", "volumes")


def _tree(module: str) -> ast.Module:
    path = pathlib.Path(compute_driver.agent.__file__).parent / (module + ".py")
    return ast.parse(path.read_text(), str(path))


@pytest.mark.parametrize("module", ENDPOINTS)
def test_no_endpoint_reaches_into_another_object(module) -> None:
    """An endpoint uses the host object's public names and its own private ones only."""
    reached = [
        "%s.%s (line %d)" % (ast.unparse(node.value), node.attr, node.lineno)
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert reached == []


@pytest.mark.parametrize("module", ENDPOINTS)
def test_no_endpoint_imports_another(module) -> None:
    imported = {
        node.module
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    others = {"compute_driver.agent." + other for other in ENDPOINTS if other != module}
    assert imported & others == set()
