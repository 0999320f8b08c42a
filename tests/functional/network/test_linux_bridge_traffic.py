"""The ``linux_bridge`` plugin on a real kernel, between two hosts simulated by network namespaces.

Everything on the host side goes through the plugin (its ``netns`` option
points it at a host's namespace); the endpoints stand in for guests. No
compute-driver services are needed. See conftest.py for the layout.
"""

from __future__ import annotations

import errno
import uuid

import pytest
from netns_lab import Endpoint, Host, Lab, ping, pings, tcp_transfer

from compute_driver import exception as cd_exception
from network_plugins import base, netlink
from network_plugins.linux_bridge import LinuxBridgePlugin, bridge_name, vlan_name, vxlan_name

INSTANCE = "0b6f2c5e-7a41-4c1e-9d2a-5b1f0e3c8a01"


def _network(kind: str, segment: int | None, physical_network: str | None = None) -> base.Network:
    return base.Network(
        id=str(uuid.uuid4()),
        name=f"{kind}-{segment}",
        type=kind,
        segment=segment,
        physical_network=physical_network,
    )


def _port(network: base.Network, n: int) -> base.Port:
    return base.Port(id=str(uuid.uuid4()), network=network, mac=f"fa:16:3e:00:00:{n:02x}")


def _plug_endpoint(
    lab: Lab, host: Host, plugin: LinuxBridgePlugin, network: base.Network, ip: str, n: int
) -> tuple[base.Port, Endpoint]:
    """Plug a port as the agent would, then attach an endpoint as libvirt would."""
    port = _port(network, n)
    plugin.plug(port, INSTANCE)
    config = plugin.interface_config(port)
    assert config.source_bridge is not None and config.mtu is not None
    endpoint = lab.endpoint(host, config.source_bridge, ip, config.mtu)
    return port, endpoint


def _kernel_has_vlan(host: Host) -> bool:
    with host.netlink() as nl:
        nl.ensure_bridge("cdtprobe", 1500)
        try:
            nl.ensure_vlan("ph0.4000", "ph0", 4000, 1500, "cdtprobe")
        except netlink.LinkError as exc:
            if exc.errno == errno.EOPNOTSUPP:
                return False
            raise
        finally:
            nl.delete("ph0.4000")
            nl.delete("cdtprobe")
    return True


def test_vxlan_networks_connect_their_own_ports_only(lab: Lab, hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    plugin_a, plugin_b = lab.plugin(a), lab.plugin(b)
    net1, net2 = _network("vxlan", 101), _network("vxlan", 102)
    for network in (net1, net2):
        plugin_a.update_topology(network, [a.underlay_ip, b.underlay_ip])
        plugin_b.update_topology(network, [a.underlay_ip, b.underlay_ip])

    _, a1 = _plug_endpoint(lab, a, plugin_a, net1, "10.251.0.11", 1)
    _, a2 = _plug_endpoint(lab, a, plugin_a, net2, "10.251.0.12", 2)
    _, b1 = _plug_endpoint(lab, b, plugin_b, net1, "10.251.0.21", 3)
    _, b2 = _plug_endpoint(lab, b, plugin_b, net2, "10.251.0.22", 4)

    # same network, other host: reachable, full-size packets unfragmented, TCP works
    assert pings([(a1, b1), (b2, a2)]) == [3, 3]
    assert ping(a1, b1, count=1, size=1450 - 28) == 1
    sent, received = tcp_transfer(a1, b1, 4 * 1024 * 1024)
    assert sent == received
    # other network, same subnet (other host, same host): not a single reply
    assert pings([(a1, b2), (b1, a2), (a1, a2)], deadline=2) == [0, 0, 0]


def test_vxlan_devices_and_flood_list(lab: Lab, hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    plugin = lab.plugin(a, vxlan_udp_port=4790)
    network = _network("vxlan", 16777215)
    plugin.ensure_network(network)
    plugin.ensure_network(network)  # idempotent

    with a.netlink() as nl:
        bridge = nl.link(bridge_name(network.id))
        vxlan = nl.link(vxlan_name(16777215))
        assert bridge is not None and bridge.kind == "bridge" and bridge.mtu == 1450 and bridge.up
        assert vxlan is not None and vxlan.master == bridge.name and vxlan.mtu == 1450 and vxlan.up
        assert vxlan.data == {
            "id": 16777215,
            "local": a.underlay_ip,
            "port": 4790,
            "learning": False,
        }
        assert nl.flood_destinations(vxlan.name) == set()

        plugin.update_topology(network, [b.underlay_ip, "10.250.0.9", a.underlay_ip, "10.250.0.9"])
        assert nl.flood_destinations(vxlan.name) == {b.underlay_ip, "10.250.0.9"}
        plugin.update_topology(network, ["10.250.0.7", b.underlay_ip])
        assert nl.flood_destinations(vxlan.name) == {b.underlay_ip, "10.250.0.7"}
        plugin.update_topology(network, [])
        assert nl.flood_destinations(vxlan.name) == set()

    plugin.delete_network(network)
    plugin.delete_network(network)  # idempotent
    assert {bridge.name, vxlan.name}.isdisjoint(a.links())


def test_last_unplug_removes_bridge_and_vxlan(lab: Lab, hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    plugin = lab.plugin(a)
    network = _network("vxlan", 4242)
    names = {bridge_name(network.id), vxlan_name(4242)}
    port1, ep1 = _plug_endpoint(lab, a, plugin, network, "10.251.0.11", 1)
    port2, ep2 = _plug_endpoint(lab, a, plugin, network, "10.251.0.12", 2)

    lab.destroy(ep1)
    plugin.unplug(port1, INSTANCE)
    assert names <= a.links()  # port2 is still plugged

    plugin.unplug(port2, INSTANCE)  # its guest still runs (tap still there): keep the bridge
    assert names <= a.links()
    with pytest.raises(cd_exception.InUse, match=ep2.tap):
        plugin.delete_network(network)

    lab.destroy(ep2)
    plugin.plug(port2, INSTANCE)
    plugin.unplug(port2, INSTANCE)
    assert names.isdisjoint(a.links())
    plugin.unplug(port2, INSTANCE)  # idempotent


def test_plug_on_a_ready_network_reads_its_devices_only(
    lab: Lab, hosts: tuple[Host, Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another plug on a network set up here: three lookups by name, no dump, no change.

    Guards issue 4 (bench/lb_plug.py): a plug must not cost a dump (which
    grows with the number of devices) nor a lookup of the bridge by index.
    """
    a, _ = hosts
    plugin = lab.plugin(a)
    network = _network("vxlan", 4343)
    plugin.update_topology(network, [a.underlay_ip, "10.250.0.9"])
    plugin.plug(_port(network, 1), INSTANCE)

    api = plugin._api()
    requests: list[tuple[str, str]] = []
    call = api._call

    def counting(action: str, name: str, method: object, *args: object, **kwargs: object) -> object:
        requests.append((action, name))
        return call(action, name, method, *args, **kwargs)

    monkeypatch.setattr(api, "_call", counting)
    plugin.plug(_port(network, 2), INSTANCE)
    bridge = bridge_name(network.id)
    assert requests == [("get", bridge), ("get", bridge), ("get", vxlan_name(4343))]


def test_vlan_networks_connect_their_own_ports_only(lab: Lab, hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    if not _kernel_has_vlan(a):
        pytest.skip("this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q)")
    plugin_a, plugin_b = lab.plugin(a), lab.plugin(b)
    net1 = _network("vlan", 101, physical_network="underlay")
    net2 = _network("vlan", 102, physical_network="underlay")
    port, a1 = _plug_endpoint(lab, a, plugin_a, net1, "10.251.0.11", 1)
    _, a2 = _plug_endpoint(lab, a, plugin_a, net2, "10.251.0.12", 2)
    _, b1 = _plug_endpoint(lab, b, plugin_b, net1, "10.251.0.21", 3)
    _, b2 = _plug_endpoint(lab, b, plugin_b, net2, "10.251.0.22", 4)

    with a.netlink() as nl:
        vlan = nl.link(vlan_name("ul0", 101))
        assert vlan is not None and vlan.data == {"id": 101} and vlan.parent == "ul0"
        assert vlan.master == bridge_name(net1.id) and vlan.mtu == 1500
    assert pings([(a1, b1), (b2, a2)]) == [3, 3]
    sent, received = tcp_transfer(a1, b1, 4 * 1024 * 1024)
    assert sent == received
    assert pings([(a1, b2), (b1, a2)], deadline=2) == [0, 0]

    lab.destroy(a1)
    plugin_a.unplug(port, INSTANCE)
    assert {bridge_name(net1.id), vlan_name("ul0", 101)}.isdisjoint(a.links())
    assert "ul0" in a.links()


def test_flat_network_bridges_the_physical_interface(lab: Lab, hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    plugin_a, plugin_b = lab.plugin(a), lab.plugin(b)
    network = _network("flat", None, physical_network="physnet1")
    port, a1 = _plug_endpoint(lab, a, plugin_a, network, "10.251.0.11", 1)
    _, b1 = _plug_endpoint(lab, b, plugin_b, network, "10.251.0.21", 2)
    assert ping(a1, b1) == 3

    # the interface carries one flat network only; the refused one leaves nothing behind
    other = _network("flat", None, physical_network="physnet1")
    with pytest.raises(
        cd_exception.NetworkError, match="is a port of bridge " + bridge_name(network.id)
    ):
        plugin_a.ensure_network(other)
    assert bridge_name(other.id) not in a.links()

    lab.destroy(a1)
    plugin_a.unplug(port, INSTANCE)
    assert bridge_name(network.id) not in a.links()
    with a.netlink() as nl:
        ph0 = nl.link("ph0")
        assert ph0 is not None and ph0.master is None  # released, never deleted


def test_failures_leave_nothing_behind(lab: Lab, hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    before = a.links()
    network = _network("vxlan", 300)

    wrong_ip = lab.plugin(a, local_ip="10.250.0.77")
    with pytest.raises(cd_exception.NetworkError, match="not an address of network namespace"):
        wrong_ip.ensure_network(network)

    with a.netlink() as nl:  # a foreign device holds the name the plugin needs
        nl.ensure_bridge("cdtforeign", 1500)
        nl.ensure_vxlan(vxlan_name(300), 300, a.underlay_ip, 4789, 1450, "cdtforeign")
    plugin = lab.plugin(a, vxlan_udp_port=4790)
    with pytest.raises(cd_exception.NetworkError, match="exists with port 4789 .wanted port 4790."):
        plugin.plug(_port(network, 1), INSTANCE)
    assert a.links() == before | {"cdtforeign", vxlan_name(300)}

    missing = lab.plugin(a, netns="cdt-missing-" + lab.suffix)
    with pytest.raises(cd_exception.NetworkError, match="No such file or directory"):
        missing.ensure_network(network)
