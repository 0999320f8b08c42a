"""The ``ovs`` plugin on real ovsdb-server/ovs-vswitchd (userspace datapath), between two hosts.

Each simulated host is a network namespace with its own OVS daemons (see
ovs_lab.py); everything on the host side goes through the plugin; the
endpoints stand in for guests and appear after the plug, as libvirt's taps
do. Every endpoint is in one subnet, so a failed ping between networks
proves L2 isolation rather than a missing route.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from netns_lab import Endpoint, ping, pings, tcp_transfer
from ovs_lab import OvsHost, OvsLab

from network_plugins import base, exception, ovs, ovs_flows

INSTANCE = "0b6f2c5e-7a41-4c1e-9d2a-5b1f0e3c8a01"


@pytest.fixture
def hosts(ovs_lab: OvsLab) -> tuple[OvsHost, OvsHost]:
    return ovs_lab.build_hosts()


def _network(kind: str, segment: int | None, physnet: str | None = None) -> base.Network:
    return base.Network(
        id=str(uuid.uuid4()),
        name=f"{kind}-{segment}",
        type=kind,
        segment=segment,
        physical_network=physnet,
    )


def _plug(
    lab: OvsLab,
    host: OvsHost,
    plugin: ovs.OvsNetworkPlugin,
    network: base.Network,
    ip: str,
    n: int,
) -> tuple[base.Port, Endpoint]:
    """Plug as the agent would, then let the 'guest' appear as libvirt would."""
    port = base.Port(
        id=str(uuid.uuid4()), network=network, mac=f"fa:16:3e:00:00:{n:02x}", addresses=(ip,)
    )
    plugin.plug(port, INSTANCE)
    config = plugin.interface_config(port)
    assert config.type == "ethernet" and config.target_managed == "no"
    assert config.host_csum is False
    assert config.target_dev is not None and config.mtu is not None
    endpoint = lab.endpoint(host, config.target_dev, ip, config.mtu)
    # the port's rules were in before the device existed; ovs-vswitchd takes it
    # under the requested OpenFlow port number
    assert plugin.db.ofport(config.target_dev, wait=10) == plugin._ports[port.id].ofport
    _set_mac(endpoint, port.mac)
    return port, endpoint


def _set_mac(endpoint: Endpoint, mac: str) -> None:
    subprocess.run(["ip", "-n", endpoint.netns, "link", "set", "eth0", "address", mac], check=True)
    endpoint.mac = mac


def _four_endpoints(
    lab: OvsLab, a: OvsHost, b: OvsHost, kind: str, physnet: str | None = None
) -> tuple[list[ovs.OvsNetworkPlugin], list[base.Network], list[tuple[base.Port, Endpoint]]]:
    plugin_a, plugin_b = a.plugin(), b.plugin()
    segments = (101, 102)
    nets = [_network(kind, s, physnet) for s in segments]
    for net in nets:
        for plugin in (plugin_a, plugin_b):
            plugin.update_topology(net, [a.underlay_ip, b.underlay_ip])
    eps = [
        _plug(lab, a, plugin_a, nets[0], "10.251.0.11", 1),
        _plug(lab, a, plugin_a, nets[1], "10.251.0.12", 2),
        _plug(lab, b, plugin_b, nets[0], "10.251.0.21", 3),
        _plug(lab, b, plugin_b, nets[1], "10.251.0.22", 4),
    ]
    return [plugin_a, plugin_b], nets, eps


@pytest.mark.parametrize("kind", ["vxlan", "geneve", "vlan"])
def test_networks_connect_their_own_ports_only(
    ovs_lab: OvsLab, hosts: tuple[OvsHost, OvsHost], kind: str
) -> None:
    a, b = hosts
    physnet = "physnet1" if kind == "vlan" else None
    _, _, eps = _four_endpoints(ovs_lab, a, b, kind, physnet)
    (_, a1), (_, a2), (_, b1), (_, b2) = eps

    # same network, other host: reachable, full-size packets unfragmented, TCP works.
    # NOTE: >= 3 within 10 s: the first ARP is lost while OVS resolves the
    # VTEP's neighbour (the guest retries after 1 s; longer on a loaded
    # machine), and ping keeps sending meanwhile, so more than 3 replies can come.
    assert min(pings([(a1, b1), (b2, a2)], deadline=10)) >= 3
    mtu = {"vxlan": 1450, "geneve": 1442, "vlan": 1500}[kind]
    assert ping(a1, b1, count=1, size=mtu - 28) == 1
    sent, received = tcp_transfer(a1, b1, 4 * 1024 * 1024)
    assert sent == received
    # other network, same subnet (other host, same host): not a single reply
    assert pings([(a1, b2), (b1, a2), (a1, a2)], deadline=2) == [0, 0, 0]
    if kind == "vlan":  # the segment on the wire is the network's, not the local VLAN
        assert "set_field:4197->vlan_vid" in a.flows("br-ph1")  # 0x1000 | 101
    else:
        assert "tun_id=0x65" in a.flows("br-cd-tun")
        tunnel = a.vsctl(
            "get", "Interface", ovs.tunnel_port_name("br-cd-tun", kind), "type", "options"
        ).split()
        assert tunnel[0] == kind and "remote_ip=flow" in " ".join(tunnel)


def _spoof_ping(src: Endpoint, dst: Endpoint) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", src.netns, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-w", "2",
         dst.ip],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return int(out.split(" received")[0].rsplit(" ", 1)[1]) if " received" in out else 0


def test_spoofed_mac_and_ip_are_dropped(ovs_lab: OvsLab, hosts: tuple[OvsHost, OvsHost]) -> None:
    a, b = hosts
    _, _, eps = _four_endpoints(ovs_lab, a, b, "vxlan")
    (_, a1), _, (_, b1), _ = eps
    assert ping(a1, b1) >= 3
    own_mac = a1.mac

    _set_mac(a1, "fa:16:3e:99:99:99")  # another MAC
    assert _spoof_ping(a1, b1) == 0
    _set_mac(a1, own_mac)
    assert ping(a1, b1) == 3  # the drop was the spoofing, nothing else

    # another source IP; static neighbours, so only the IP rule is in the way
    subprocess.run(["ip", "-n", a1.netns, "addr", "flush", "dev", "eth0"], check=True)
    subprocess.run(
        ["ip", "-n", a1.netns, "addr", "add", "10.251.0.99/24", "dev", "eth0"], check=True
    )
    subprocess.run(
        ["ip", "-n", a1.netns, "neigh", "replace", b1.ip, "lladdr", b1.mac, "dev", "eth0"],
        check=True,
    )
    subprocess.run(
        ["ip", "-n", b1.netns, "neigh", "replace", "10.251.0.99", "lladdr", own_mac, "dev", "eth0"],
        check=True,
    )
    assert _spoof_ping(a1, b1) == 0
    flows = a.flows("br-cd-int")
    assert "nw_src=10.251.0.11" in flows and "arp_spa=10.251.0.11" in flows


def test_last_unplug_removes_the_hosts_tunnels(
    ovs_lab: OvsLab, hosts: tuple[OvsHost, OvsHost]
) -> None:
    a, b = hosts
    (plugin_a, plugin_b), (net1, net2), eps = _four_endpoints(ovs_lab, a, b, "vxlan")
    (port_a1, a1), (port_a2, a2), _, _ = eps
    assert "tun_id=0x65" in a.flows("br-cd-tun")

    ovs_lab.destroy(a1)
    plugin_a.unplug(port_a1, INSTANCE)
    flows = a.flows("br-cd-tun")
    assert "tun_id=0x65" not in flows and "tun_id=0x66" in flows
    assert "br-cd-tun-vx" in a.vsctl("list-ports", "br-cd-tun")  # net2 still uses it
    assert port_a1.network.id not in a.vsctl("get", "Bridge", "br-cd-int", "external_ids")
    assert ovs.tap_name(port_a1.id) not in a.vsctl("list-ports", "br-cd-int")

    ovs_lab.destroy(a2)
    plugin_a.unplug(port_a2, INSTANCE)
    plugin_a.unplug(port_a2, INSTANCE)  # idempotent
    assert "tun_id" not in a.flows("br-cd-tun")
    assert "br-cd-tun-vx" not in a.vsctl("list-ports", "br-cd-tun")

    # B is told A has no ports left: B's tunnels to A for net1 go
    plugin_b.update_topology(net1, [b.underlay_ip])
    flows = b.flows("br-cd-tun")
    assert "tun_id=0x65" not in flows and "tun_id=0x66" in flows
    plugin_b.update_topology(net2, [])
    assert "tun_id" not in b.flows("br-cd-tun")
    assert "br-cd-tun-vx" not in b.vsctl("list-ports", "br-cd-tun")


def test_vswitchd_restart_then_resync(ovs_lab: OvsLab, hosts: tuple[OvsHost, OvsHost]) -> None:
    a, b = hosts
    (plugin_a, _), _, eps = _four_endpoints(ovs_lab, a, b, "geneve")
    (_, a1), _, (_, b1), _ = eps
    assert plugin_a.check_and_resync() is False
    assert ping(a1, b1) >= 3

    a.stop_vswitchd(cleanup=False)
    a.start_vswitchd()
    canary = f"cookie={ovs_flows.cookie(ovs_flows.KIND_CANARY):#x}"
    assert canary not in a.flows("br-cd-int")  # flows do not survive a restart
    assert ping(a1, b1, count=1, deadline=1) == 0

    assert plugin_a.check_and_resync() is True
    assert canary in a.flows("br-cd-int")
    assert ping(a1, b1) == 3
    assert plugin_a.check_and_resync() is False

    # an agent restart: a new instance finds everything in OVSDB and reinstalls it
    fresh = a.plugin()
    assert fresh.check_and_resync() is True
    assert ping(a1, b1) == 3
    sent, received = tcp_transfer(a1, b1, 1024 * 1024)
    assert sent == received


def test_a_refused_rule_leaves_the_bridge_unchanged(
    ovs_lab: OvsLab, hosts: tuple[OvsHost, OvsHost]
) -> None:
    a, _ = hosts
    plugin = a.plugin()
    assert plugin.check_and_resync() is True  # bridges and their base rules
    assert "OpenFlow14" in a.vsctl("get", "Bridge", "br-cd-int", "protocols")
    mark = ovs_flows.cookie(ovs_flows.KIND_PORT, 4000)
    good = ovs_flows.Flow(ovs_flows.INGRESS, 7, "in_port=4000", "drop", mark)
    backwards = ovs_flows.Flow(ovs_flows.INGRESS, 8, "", "goto_table:0", mark)  # goes back
    with pytest.raises(exception.OpenFlowError, match="BAD_INSTRUCTION.*FLOW_MOD"):
        plugin.openflow.apply("br-cd-int", add=[good, backwards])
    assert f"cookie={mark:#x}" not in a.flows("br-cd-int")  # the bundle was not committed
    plugin.openflow.apply("br-cd-int", add=[good])  # the connection is usable again
    assert f"cookie={mark:#x}" in a.flows("br-cd-int")


def _link(host: OvsHost, name: str) -> dict | None:
    out = subprocess.run(
        ["ip", "-n", host.netns, "-j", "-d", "link", "show", "dev", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


def test_the_plugin_owns_the_tap_and_puts_its_port_back(
    ovs_lab: OvsLab, hosts: tuple[OvsHost, OvsHost]
) -> None:
    """The port of a guest is the plugin's: a persistent tap and an access port of
    the network's local VLAN, which libvirt never touches; a row or tap that
    something else changed or removed is put back as the plug made it."""
    a, _ = hosts
    plugin = a.plugin(taps=True)
    port = base.Port(
        id=str(uuid.uuid4()),
        network=_network("vxlan", 101),
        mac="fa:16:3e:00:00:09",
        addresses=("10.251.0.19",),
    )
    plugin.plug(port, INSTANCE)
    tap = ovs.tap_name(port.id)
    link = _link(a, tap)
    assert link is not None, "no tap"
    assert link["linkinfo"]["info_kind"] == "tun"
    assert link["linkinfo"]["info_data"]["type"] == "tap"
    assert link["linkinfo"]["info_data"]["persist"] is True
    assert link["address"] == "fe:16:3e:00:00:09" and link["mtu"] == 1450
    assert "UP" in link["flags"]
    assert plugin.interface_config(port).target_managed == "no"
    fresh = a.port_record(tap)
    assert fresh is not None
    vlan = plugin._networks[port.network.id].vlan
    assert fresh["port"]["tag"] == vlan and fresh["port"]["vlan_mode"] == "access"
    ofport = plugin._ports[port.id].ofport
    assert fresh["interface"]["ofport"] == fresh["interface"]["ofport_request"] == ofport
    cookie = ovs_flows.cookie(ovs_flows.KIND_PORT, ofport)
    flows = a.port_flows("br-cd-int", cookie)
    # table 11 is reached from table 10 only, where the tag was checked
    assert flows and all("vlan_tci=0x0000/0x1fff" in f for f in flows if "table=10," in f)
    assert plugin.check_and_resync() is False

    # What <virtualport type='openvswitch'> made libvirt do at each stop and
    # start: the row deleted, then added back untagged (a trunk).
    a.vsctl("--if-exists", "del-port", tap)
    a.vsctl("add-port", "br-cd-int", tap)
    assert a.port_record(tap)["port"]["tag"] == ["set", []]  # type: ignore[index]
    assert plugin.check_and_resync() is True
    assert a.port_record(tap) == fresh
    assert a.port_flows("br-cd-int", cookie) == flows

    # A host reboot removes the taps; OVSDB keeps the rows.
    subprocess.run(["ip", "-n", a.netns, "link", "del", tap], check=True)
    assert plugin.check_and_resync() is True
    assert _link(a, tap) is not None
    assert a.port_record(tap) == fresh
    assert plugin.check_and_resync() is False

    plugin.unplug(port, INSTANCE)
    assert _link(a, tap) is None and a.port_record(tap) is None
    assert a.port_flows("br-cd-int", cookie) == []
