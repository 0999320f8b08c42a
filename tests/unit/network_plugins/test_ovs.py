"""The ``ovs`` plugin's options, names, rules and validation, without OVS.

The OVSDB and OpenFlow side is exercised for real, with traffic, by
tests/functional/network/test_ovs_traffic.py.
"""

from __future__ import annotations

import ipaddress
import pathlib

import pytest
from oslo_config import cfg

from compute_driver import exception as cd_exception
from network_plugins import base, netlink, ovs, ovs_db, ovs_flows, segments
from network_plugins import exception as np_exception
from network_plugins.ovs import OvsNetworkPlugin

NET_ID = "3f2a1b2c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
PORT_ID = "9f2c6a1e-0000-4000-8000-0000000000aa"
INSTANCE = "0b6f2c5e-7a41-4c1e-9d2a-5b1f0e3c8a01"
MAC = "fa:16:3e:00:00:01"


def _plugin(**options: object) -> OvsNetworkPlugin:
    conf = cfg.ConfigOpts()
    conf([], project="cdt", default_config_files=[])
    # NOTE: a group object of this ConfigOpts' own: oslo.config keeps overrides
    # in the registered group, which would otherwise leak between tests.
    conf.register_group(cfg.OptGroup("ovs"))
    conf.register_opts(ovs.OPTS, group="ovs")
    settings: dict[str, object] = {
        "local_ip": "10.250.0.1",
        "bridge_mappings": ["physnet1:br-eth1"],
        # nothing listens here: only error paths may reach OVSDB in unit tests
        "ovsdb_connection": "unix:/nonexistent/cdt-db.sock",
        "ovsdb_timeout": 1,
    }
    settings.update(options)
    for name, value in settings.items():
        conf.set_override(name, value, group="ovs")
    return OvsNetworkPlugin(conf)


def _net(kind: str = "vxlan", segment: int | None = 101, **kw: object) -> base.Network:
    return base.Network(id=NET_ID, name="n", type=kind, segment=segment, **kw)  # type: ignore[arg-type]


def _port(network: base.Network | None = None, **kw: object) -> base.Port:
    return base.Port(id=PORT_ID, network=network or _net(), mac=MAC, **kw)  # type: ignore[arg-type]


# --- options and names ----------------------------------------------------------------


def test_list_opts_is_the_ovs_group() -> None:
    ((group, opts),) = ovs.list_opts().items()
    assert group.name == "ovs" and opts is ovs.OPTS
    names = {o.name for o in opts}
    assert {
        "integration_bridge",
        "tunnel_bridge",
        "datapath_type",
        "ovsdb_connection",
        "ovsdb_timeout",
        "local_ip",
        "bridge_mappings",
    } <= names


def test_defaults() -> None:
    plugin = _plugin()
    assert plugin.opts.datapath_type == "system"
    assert plugin.opts.integration_bridge == "br-cd-int"
    assert plugin.opts.tunnel_bridge == "br-cd-tun"
    assert plugin.mappings == {"physnet1": "br-eth1"}
    assert plugin.describe().to_wire() == {
        "name": "ovs",
        "network_types": ["flat", "vlan", "vxlan", "geneve"],
        "anti_spoofing": True,
        "tunnels": True,
        "resync": True,
    }


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("bridge_mappings", ["physnet1"], "is not <physical_network>:<bridge>"),
        ("bridge_mappings", ["p:br1", "p:br2"], "maps physical network 'p' a second time"),
        ("bridge_mappings", ["p:br1", "q:br1"], "maps bridge 'br1' a second time"),
    ],
)
def test_bad_options_stop_the_plugin(option: str, value: object, match: str) -> None:
    with pytest.raises(cd_exception.InvalidConfig, match=match):
        _plugin(**{option: value})


@pytest.mark.parametrize(
    ("line", "match"),
    [("datapath_type = dpdk", "datapath_type"), ("ovsdb_timeout = 0", "ovsdb_timeout")],
)
def test_bad_option_values_in_a_file(tmp_path: pathlib.Path, line: str, match: str) -> None:
    path = tmp_path / "cd.conf"
    path.write_text(f"[ovs]\n{line}\n")
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project="cdt", default_config_files=[])
    conf.register_group(cfg.OptGroup("ovs"))
    with pytest.raises(cd_exception.InvalidConfig, match=match):
        OvsNetworkPlugin(conf)


def test_tap_and_patch_names() -> None:
    assert ovs.tap_name(PORT_ID) == "tap9f2c6a1e-00"
    assert len(ovs.tap_name(PORT_ID)) == 14
    with pytest.raises(cd_exception.Invalid):
        ovs.tap_name("a/b")
    assert ovs.patch_names("br-eth1") == ("int-br-eth1", "phy-br-eth1")
    assert all(len(n) <= 15 for n in ovs.patch_names("br-a-very-long-name"))


def test_default_bridges_and_keys_are_not_neutrons() -> None:
    """Fails before issue 17: br-int/br-tun and iface-id/attached-mac/vm-uuid/iface-status,
    which a Neutron OVS agent or ovn-controller on the same host would claim."""
    plugin = _plugin()
    assert {plugin.int_br, plugin.tun_br}.isdisjoint({"br-int", "br-tun", "br-ex"})
    keys = {ovs.IFACE_PORT, ovs.IFACE_MAC, ovs.IFACE_INSTANCE, ovs.IFACE_NETWORK}
    assert all(k.startswith("compute-driver-") for k in keys | {ovs.NETWORK_KEY})
    assert ovs.LEGACY_IFACE_KEYS["iface-id"] == ovs.IFACE_PORT
    assert ovs.LEGACY_IFACE_KEYS["iface-status"] is None  # dropped


def test_patch_and_tunnel_ports_are_named_after_their_bridges() -> None:
    """Fails before issue 17: patch-tun/patch-int and cd-vxlan whatever the bridges."""
    assert ovs.tunnel_patch_names("br-cd-int", "br-cd-tun") == ("br-cd-int-tun", "br-cd-tun-int")
    assert ovs.tunnel_port_name("br-cd-tun", "vxlan") == "br-cd-tun-vx"
    assert ovs.tunnel_port_name("br-cd-tun", "geneve") == "br-cd-tun-gnv"
    one = ovs.tunnel_patch_names("br-tenant-a-int", "br-tenant-a-tun")
    two = ovs.tunnel_patch_names("br-tenant-b-int", "br-tenant-b-tun")
    assert set(one).isdisjoint(two) and all(len(n) <= 15 for n in one + two)
    assert ovs.tunnel_port_name("br-tenant-a-tun", "geneve") != ovs.tunnel_port_name(
        "br-tenant-b-tun", "geneve"
    )
    assert _plugin().tunnel_patch == ("br-cd-int-tun", "br-cd-tun-int")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"integration_bridge": "br-a-name-too-long"}, "integration_bridge: 'br-a-name-too-long'"),
        ({"tunnel_bridge": "br/x"}, "tunnel_bridge: 'br/x' has a character"),
        ({"tunnel_bridge": "br-cd-int"}, "bridge 'br-cd-int' is also \\[ovs\\] integration_br"),
        ({"bridge_mappings": ["physnet1:br-cd-tun"]}, "bridge 'br-cd-tun' is also"),
    ],
)
def test_bridge_names_are_checked_at_start(options: dict[str, object], match: str) -> None:
    with pytest.raises(cd_exception.InvalidConfig, match=match):
        _plugin(**options)


def test_network_record_round_trip() -> None:
    network = _net("vlan", 7, physical_network="physnet1", mtu=9000)
    state = ovs.NetState(network, vlan=3, remotes=frozenset({"10.0.0.2"}))
    back = ovs.NetState.from_record(NET_ID, state.record())
    assert back == state


# --- validation (before anything touches OVS) ----------------------------------------------


@pytest.mark.parametrize(
    ("network", "error", "match"),
    [
        (_net("gre", 1), np_exception.NetworkTypeNotSupported, "gre"),
        (_net("vxlan", 0), cd_exception.Invalid, "VNI"),
        (_net("geneve", 2**24), cd_exception.Invalid, "VNI"),
        (_net("vlan", 4095, physical_network="physnet1"), cd_exception.Invalid, "VLAN id"),
        (_net("flat", 5, physical_network="physnet1"), cd_exception.Invalid, "has no segment"),
        (_net("flat", None, physical_network="physnet9"), cd_exception.InvalidConfig, "physnet9"),
        (_net("vxlan", 5, mtu=60), cd_exception.Invalid, "below the minimum"),
    ],
)
def test_invalid_networks(network: base.Network, error: type, match: str) -> None:
    plugin = _plugin()
    with pytest.raises(error, match=match):
        plugin.ensure_network(network)
    with pytest.raises(error, match=match):
        plugin.plug(_port(network), INSTANCE)


def test_tunnel_networks_need_local_ip() -> None:
    with pytest.raises(cd_exception.InvalidConfig, match="local_ip is not set"):
        _plugin(local_ip=None).interface_config(_port())


def test_bad_mac_is_refused() -> None:
    port = base.Port(id=PORT_ID, network=_net(), mac="01:00:5e:00:00:01")
    with pytest.raises(cd_exception.Invalid, match="MAC"):
        _plugin().plug(port, INSTANCE)


@pytest.mark.parametrize(
    ("endpoints", "match"),
    [(["nope"], "is not an IP address"), (["fd00::2"], "is IPv6 but")],
)
def test_bad_remote_endpoints(endpoints: list[str], match: str) -> None:
    with pytest.raises(cd_exception.Invalid, match=match):
        _plugin().update_topology(_net(), endpoints)


def test_topology_of_flat_and_vlan_networks_is_ignored() -> None:
    # no tunnels to keep: nothing is validated against local_ip, OVSDB is not needed
    _plugin().update_topology(_net("vlan", 5, physical_network="physnet1"), ["x"])


# --- the libvirt interface --------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "datapath", "mtu", "csum"),
    [
        (_net("vxlan", 5), "netdev", 1450, False),
        (_net("geneve", 5), "system", 1442, None),
        (_net("vlan", 5, physical_network="physnet1"), "system", 1500, None),
        (_net("vxlan", 5, mtu=1400), "system", 1400, None),
    ],
)
def test_interface_config(
    network: base.Network, datapath: str, mtu: int, csum: bool | None
) -> None:
    config = _plugin(datapath_type=datapath).interface_config(_port(network))
    # NOTE: the plugin's own tap, never a libvirt-made OVS port (libvirt would
    # delete the port's row at every stop and add it back untagged at start).
    assert config.type == "ethernet" and config.source_bridge is None
    assert config.virtualport_type is None and config.interfaceid is None
    assert config.target_dev == ovs.tap_name(PORT_ID) and config.target_managed == "no"
    assert config.mac == MAC and config.mtu == mtu and config.host_csum is csum


def test_tap_mac_is_the_guests_with_fe_first() -> None:
    assert ovs.tap_mac("FA:16:3E:00:00:01") == "fe:16:3e:00:00:01"


def test_ipv6_underlay_costs_20_more_bytes() -> None:
    config = _plugin(local_ip="fd00::1").interface_config(_port())
    assert config.mtu == 1430


# --- rules ----------------------------------------------------------------------------


def test_guest_port_rules_allow_only_its_own_addresses() -> None:
    flows = ovs_flows.guest_port(100, MAC, ["10.0.0.5", "fd00::5"])
    ingress = [f for f in flows if f.table == ovs_flows.INGRESS]
    text = "\n".join(f.text() for f in ingress)
    own = f"in_port=100,vlan_tci=0x0000/0x1fff,dl_src={MAC}"
    assert all(own in f.match for f in ingress)
    assert f"arp,arp_sha={MAC},arp_spa=10.0.0.5" in text
    assert "ip,nw_src=10.0.0.5" in text
    assert "ipv6,ipv6_src=fd00::5" in text
    assert "ipv6_src=fe80::f816:3eff:fe00:1" in text  # the MAC's link-local address
    assert {f.table for f in flows} == {ovs_flows.INGRESS, ovs_flows.GUEST_PROTOCOLS}
    assert {f.cookie for f in flows} == {ovs_flows.cookie(ovs_flows.KIND_PORT, 100)}
    # what IP traffic may say is checked by table 11; ARP and DHCP discovery are not IP from it
    for flow in ingress:
        expected = "NORMAL" if "arp" in flow.match or "tp_dst=67" in flow.match else "goto_table:11"
        assert flow.actions == expected, flow.text()


def test_neighbour_advertisements_only_for_the_ports_own_addresses() -> None:
    flows = ovs_flows.guest_port(100, MAC, ["10.0.0.5", "fd00::5"])
    table11 = {f.match for f in flows if f.table == ovs_flows.GUEST_PROTOCOLS}
    na = "in_port=100,icmp6,icmp_type=136"
    assert table11 == {
        f"{na},nd_target={ip},nd_tll={ll}"
        for ip in ("fd00::5", "fe80::f816:3eff:fe00:1")
        for ll in (MAC, "00:00:00:00:00:00")
    } | {f"in_port=100,icmp6,icmp_type=135,nd_sll={ll}" for ll in (MAC, "00:00:00:00:00:00")}


def test_an_ipv4_only_port_may_use_its_link_local_address() -> None:
    """Fails before issue 17: an IPv4-only port had no IPv6 rule at all."""
    flows = ovs_flows.guest_port(100, MAC, ["10.0.0.5"])
    text = "\n".join(f.text() for f in flows)
    assert "ipv6,ipv6_src=fe80::f816:3eff:fe00:1,actions=goto_table:11" in text
    assert "icmp6,ipv6_src=::,icmp_type=135" in text  # duplicate address detection
    assert "nd_target=fe80::f816:3eff:fe00:1" in text


def test_no_guest_is_a_dhcp_server_or_a_router() -> None:
    """Fails before issue 17: an allowed source address let all of these through."""
    base_rules = ovs_flows.integration_base(1, [])
    drops = {
        f.match
        for f in base_rules
        if f.table == ovs_flows.GUEST_PROTOCOLS and f.actions == "drop" and f.priority == 50
    }
    assert drops == {
        "udp,tp_src=67,tp_dst=68",
        "udp6,tp_src=547,tp_dst=546",
        "icmp6,icmp_type=134",
        "icmp6,icmp_type=137",
    }
    (default,) = [f for f in base_rules if f.table == ovs_flows.GUEST_PROTOCOLS and not f.match]
    assert default.actions == "NORMAL" and default.priority == 0
    # neighbour discovery: dropped unless a port's own rule (priority 100) allows it
    assert all(
        f.priority == 40 and f.actions == "drop"
        for f in base_rules
        if f.table == ovs_flows.GUEST_PROTOCOLS
        and "icmp_type=13" in f.match
        and f.match not in drops
    )


def test_guest_port_without_addresses_is_checked_on_its_mac() -> None:
    flows = ovs_flows.guest_port(7, MAC, [])
    (flow,) = [f for f in flows if f.table == ovs_flows.INGRESS]
    assert flow.match == f"in_port=7,vlan_tci=0x0000/0x1fff,dl_src={MAC}"
    assert flow.actions == "goto_table:11"  # still no DHCP server, no router
    assert f"in_port=7,icmp6,icmp_type=136,nd_tll={MAC}" in {f.match for f in flows}


def test_tunnel_rules_reach_exactly_the_remotes() -> None:
    flows = ovs_flows.tunnel_network(2, 1, 0x65, 3, ["10.0.0.3", "10.0.0.2"])
    inbound = [f for f in flows if f.table == ovs_flows.INBOUND]
    (outbound,) = [f for f in flows if f.table == ovs_flows.OUTBOUND]
    assert [f.match for f in inbound] == [
        "in_port=2,tun_id=0x65,tun_src=10.0.0.2",
        "in_port=2,tun_id=0x65,tun_src=10.0.0.3",
    ]
    assert all(f.actions == "mod_vlan_vid:3,output:1" for f in inbound)
    assert outbound.match == "dl_vlan=3"
    assert outbound.actions == (
        "strip_vlan,set_field:0x65->tun_id,set_field:10.0.0.2->tun_dst,output:2,"
        "set_field:10.0.0.3->tun_dst,output:2"
    )
    assert ovs_flows.tunnel_network(2, 1, 0x65, 3, []) == []


def test_provider_rules_translate_vlans() -> None:
    (into,) = ovs_flows.provider_in(10, 3, 101)
    assert into.match == "in_port=10,dl_vlan=101" and into.actions == "mod_vlan_vid:3,NORMAL"
    (flat,) = ovs_flows.provider_in(10, 4, None)
    assert flat.match == "in_port=10,vlan_tci=0x0000/0x1fff"
    (out,) = ovs_flows.provider_out(6, 3, 101)
    assert out.match == "in_port=6,dl_vlan=3" and out.actions == "mod_vlan_vid:101,NORMAL"
    (flat_out,) = ovs_flows.provider_out(6, 4, None)
    assert flat_out.actions == "strip_vlan,NORMAL"


def test_flow_and_deletion_text() -> None:
    flow = ovs_flows.Flow(10, 5, "in_port=1", "drop", 0xCD00000300000001)
    assert flow.text() == "cookie=0xcd00000300000001,table=10,priority=5,in_port=1,actions=drop"
    assert (
        ovs_flows.Flow(0, 0, "", "drop", 1).text() == "cookie=0x1,table=0,priority=0,actions=drop"
    )
    deletion = ovs_flows.Deletion(0xCD << 56, 0xFF << 56)
    assert deletion.text() == "cookie=0xcd00000000000000/0xff00000000000000"


def test_link_local_is_eui64() -> None:
    address = ipaddress.IPv6Address(segments.link_local("52:54:00:12:34:56"))
    assert address == ipaddress.IPv6Address("fe80::5054:ff:fe12:3456")


# --- error paths ----------------------------------------------------------------------


def test_unreachable_ovsdb_is_a_network_error() -> None:
    plugin = _plugin()
    with pytest.raises(cd_exception.NetworkError, match="cannot reach OVSDB") as info:
        plugin.plug(_port(), INSTANCE)
    assert "plug" in str(info.value) and NET_ID in str(info.value)
    with pytest.raises(cd_exception.NetworkError, match="resync"):
        plugin.check_and_resync()


def test_unreachable_openflow_is_a_network_error(tmp_path: pathlib.Path) -> None:
    plugin = _plugin(run_dir=str(tmp_path))
    plugin._ready = True  # as if OVSDB had been read: the canary check goes to OpenFlow
    with pytest.raises(cd_exception.NetworkError, match="OpenFlow connect on bridge br-cd-int"):
        plugin.check_and_resync()


def test_plug_into_a_second_network_is_refused() -> None:
    plugin = _plugin()
    plugin._ports[PORT_ID] = ovs.PortState("other-net", INSTANCE, MAC, (), 100)
    with pytest.raises(cd_exception.NetworkError, match="plugged into network other-net"):
        plugin.plug(_port(), INSTANCE)


def test_ofport_of() -> None:
    class Row:
        def __init__(self, ofport: list[int]) -> None:
            self.ofport = ofport

    assert ovs_db.ofport_of(None) is None
    assert ovs_db.ofport_of(Row([])) is None
    assert ovs_db.ofport_of(Row([-1])) is None
    assert ovs_db.ofport_of(Row([101])) == 101


def test_tap_presence_is_a_sysfs_look_in_the_hosts_namespace() -> None:
    with netlink.Netlink() as nl:
        assert nl.exists("lo") is True
        assert nl.exists("cdt-no-such") is False
        assert nl.exists("a/b") is False
