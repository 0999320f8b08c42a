"""The ``linux_bridge`` plugin's options, names, decisions and error paths, on a fake netlink.

The kernel side (network_plugins/netlink.py) is exercised for real by
tests/functional/network/test_linux_bridge_traffic.py.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver import exception as cd_exception
from network_plugins import base, linux_bridge, netlink
from network_plugins import exception as np_exception
from network_plugins.linux_bridge import LinuxBridgePlugin, bridge_name, vlan_name, vxlan_name

NET_ID = "3f2a1b2c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
INSTANCE = "0b6f2c5e-7a41-4c1e-9d2a-5b1f0e3c8a01"
LOCAL_IP = "10.250.0.1"


class FakeNetlink:
    """The part of :class:`netlink.Netlink` the plugin uses, over a dict of devices."""

    def __init__(self, addresses: tuple[str, ...] = (LOCAL_IP,)) -> None:
        self.links: dict[str, netlink.Link] = {
            name: netlink.Link(name, i, None, 1500, True) for i, name in enumerate(("eth1", "eth2"))
        }
        self.fdb: dict[str, set[str]] = {}
        self.address_set = set(addresses)
        self.fail: dict[str, netlink.LinkError] = {}  # method name -> error to raise
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.closed = False

    def _record(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if method in self.fail:
            raise self.fail[method]

    def _add(self, name: str, kind: str, mtu: int, **kwargs: Any) -> None:
        self.links[name] = netlink.Link(name, len(self.links), kind, mtu, True, **kwargs)

    def link(self, name: str) -> netlink.Link | None:
        return self.links.get(name)

    def ensure_bridge(self, name: str, mtu: int) -> bool:
        self._record("ensure_bridge", name, mtu)
        created = name not in self.links
        self._add(name, "bridge", mtu)
        return created

    def ensure_vxlan(
        self, name: str, vni: int, local: str, port: int, mtu: int, bridge: str
    ) -> bool:
        self._record("ensure_vxlan", name, vni, local, port, mtu, bridge)
        created = name not in self.links
        data = {"id": vni, "local": local, "port": port, "learning": False}
        self._add(name, "vxlan", mtu, master=bridge, data=data)
        self.fdb.setdefault(name, set())
        return created

    def ensure_vlan(self, name: str, parent: str, vid: int, mtu: int, bridge: str) -> bool:
        self._record("ensure_vlan", name, parent, vid, mtu, bridge)
        created = name not in self.links
        self._add(name, "vlan", mtu, master=bridge, parent=parent, data={"id": vid})
        return created

    def enslave(self, name: str, bridge: str, mtu: int | None = None) -> None:
        self._record("enslave", name, bridge)
        link = self.links[name]
        if link.master not in (None, bridge):
            raise netlink.LinkError(
                "add to bridge " + bridge, name, f"is a port of bridge {link.master}"
            )
        self.links[name] = netlink.Link(name, link.index, link.kind, link.mtu, True, master=bridge)

    def delete(self, name: str) -> bool:
        self._record("delete", name)
        for other, link in list(self.links.items()):
            if link.master == name:  # deleting a bridge releases its ports
                self.links[other] = netlink.Link(other, link.index, link.kind, link.mtu, link.up)
        self.fdb.pop(name, None)
        return self.links.pop(name, None) is not None

    def ports(self, bridge: str) -> list[str]:
        return sorted(name for name, link in self.links.items() if link.master == bridge)

    def addresses(self) -> set[str]:
        return set(self.address_set)

    def set_flood_destinations(self, dev: str, destinations: set[str]) -> tuple[set[str], set[str]]:
        self._record("set_flood_destinations", dev, destinations)
        current = self.fdb[dev]
        self.fdb[dev] = set(destinations)
        return destinations - current, current - destinations

    def close(self) -> None:
        self.closed = True


class FakePortFilter:
    """The part of :class:`nft_ports.PortFilter` the plugin uses: the rules it was given."""

    def __init__(self) -> None:
        self.rules: dict[str, tuple[str, tuple[str, ...]]] = {}  # tap -> (mac, addresses)
        self.fail: np_exception.NftablesError | None = None

    def plug(self, tap_name: str, mac: str, addresses: list[str]) -> None:
        if self.fail is not None:
            raise self.fail
        self.rules[tap_name] = (mac, tuple(addresses))

    def unplug(self, tap_name: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.rules.pop(tap_name, None)


def make_conf(**options: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf([], project="unit", default_config_files=[])
    conf.register_opts(linux_bridge.OPTS, group=linux_bridge.GROUP)
    options.setdefault("local_ip", LOCAL_IP)
    options.setdefault("physical_interface_mappings", ["physnet1:eth1"])
    for name, value in options.items():
        conf.set_override(name, value, group="linux_bridge")
    return conf


@pytest.fixture
def nl() -> FakeNetlink:
    return FakeNetlink()


@pytest.fixture
def rules() -> FakePortFilter:
    return FakePortFilter()


@pytest.fixture
def plugin(nl: FakeNetlink, rules: FakePortFilter) -> LinuxBridgePlugin:
    return LinuxBridgePlugin(make_conf(), netlink_api=nl, port_filter=rules)  # type: ignore[arg-type]


def net(kind: str = "vxlan", segment: int | None = 101, **kwargs: Any) -> base.Network:
    kwargs.setdefault("id", NET_ID)
    return base.Network(name="n", type=kind, segment=segment, **kwargs)


def port(network: base.Network, port_id: str = "p1", mac: str = "fa:16:3e:00:00:01") -> base.Port:
    return base.Port(id=port_id, network=network, mac=mac)


BRIDGE = "brq3f2a1b2c-4d"


# --- options -------------------------------------------------------------------


def test_options_and_defaults() -> None:
    assert linux_bridge.list_opts() == {linux_bridge.GROUP: linux_bridge.OPTS}
    conf = cfg.ConfigOpts()
    conf([], project="unit", default_config_files=[])
    opts = LinuxBridgePlugin(conf).opts
    assert opts.physical_interface_mappings == []
    assert opts.local_ip is None and opts.netns is None
    assert (opts.vxlan_udp_port, opts.underlay_mtu) == (4789, 1500)
    assert all(opt.help for opt in linux_bridge.OPTS)


@pytest.mark.parametrize(
    "text, option",
    [
        ("vxlan_udp_port = 0", "vxlan_udp_port"),
        ("vxlan_udp_port = 65536", "vxlan_udp_port"),
        ("underlay_mtu = 100", "underlay_mtu"),
        ("local_ip = 10.250.0.300", "local_ip"),
    ],
)
def test_bad_option_values_stop_the_plugin_at_start(tmp_path, text: str, option: str) -> None:
    path = tmp_path / "cd.conf"
    path.write_text("[linux_bridge]\n%s\n" % text)
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project="unit", default_config_files=[])
    with pytest.raises(cd_exception.InvalidConfig, match=r"\[linux_bridge\] " + option):
        LinuxBridgePlugin(conf)


def test_ipv6_local_ip_is_accepted() -> None:
    plugin = LinuxBridgePlugin(make_conf(local_ip="fd00::1"), netlink_api=FakeNetlink())  # type: ignore[arg-type]
    assert plugin.interface_config(port(net())).mtu == 1500 - 70


@pytest.mark.parametrize(
    "mapping, why",
    [
        ("eth1", "is not <physical_network>:<interface>"),
        (":eth1", "is not <physical_network>:<interface>"),
        ("physnet1:", "names no usable interface"),
        ("physnet1:eth/1", "names no usable interface"),
        ("physnet1:a-very-long-ifname", "names no usable interface"),
    ],
)
def test_malformed_mappings_are_refused(mapping: str, why: str) -> None:
    with pytest.raises(cd_exception.InvalidConfig, match=why) as info:
        LinuxBridgePlugin(make_conf(physical_interface_mappings=[mapping]))
    assert "physical_interface_mappings" in str(info.value) and repr(mapping) in str(info.value)


def test_mappings_name_each_physnet_and_interface_once() -> None:
    assert linux_bridge.parse_mappings([" physnet1 : eth1 ", "physnet2:eth2"]) == {
        "physnet1": "eth1",
        "physnet2": "eth2",
    }
    with pytest.raises(cd_exception.InvalidConfig, match="'physnet1' a second time"):
        linux_bridge.parse_mappings(["physnet1:eth1", "physnet1:eth2"])
    with pytest.raises(cd_exception.InvalidConfig, match="'eth1' a second time"):
        linux_bridge.parse_mappings(["physnet1:eth1", "physnet2:eth1"])


# --- names and description --------------------------------------------------------


def test_names_are_deterministic_and_fit_ifnamsiz() -> None:
    assert bridge_name(NET_ID) == BRIDGE and len(BRIDGE) == 14
    assert bridge_name("net1") == "brqnet1"
    assert vxlan_name(101) == "vxlan-101" and len(vxlan_name(2**24 - 1)) <= 15
    assert vlan_name("eth1", 101) == "eth1.101"
    long_a, long_b = vlan_name("enp0s31f6abcdef", 4094), vlan_name("enp0s31f6abcxyz", 4094)
    assert len(long_a) == 15 and long_a.endswith(".4094") and long_a != long_b
    assert long_a == vlan_name("enp0s31f6abcdef", 4094)


@pytest.mark.parametrize("network_id", ["", "a/b", "a b", "a:b"])
def test_ids_that_cannot_name_a_bridge_are_refused(network_id: str) -> None:
    with pytest.raises(cd_exception.Invalid, match="cannot name a bridge"):
        bridge_name(network_id)


def test_describe(plugin: LinuxBridgePlugin) -> None:
    assert plugin.describe().to_wire() == {
        "name": "linux_bridge",
        "network_types": ["flat", "vlan", "vxlan"],
        "anti_spoofing": True,
        "tunnels": True,
        "resync": False,
    }


# --- interface_config and MTU ----------------------------------------------------------


def test_interface_config_is_a_bridge_interface(plugin: LinuxBridgePlugin) -> None:
    config = plugin.interface_config(port(net()))
    assert (config.type, config.source_bridge, config.mac) == (
        "bridge",
        BRIDGE,
        "fa:16:3e:00:00:01",
    )
    assert (config.model, config.mtu) == ("virtio", 1450)
    assert '<source bridge="%s"/>' % BRIDGE in config.to_string()


@pytest.mark.parametrize(
    "network, underlay, mtu",
    [
        (net(), 1500, 1450),
        (net(mtu=1400), 1500, 1400),  # the network says less
        (net(mtu=9000), 9000, 8950),
        (net("flat", None, mtu=1500), 1500, 1500),
        (net("vlan", 5, mtu=9000), 1500, 9000),  # no tunnel: the underlay does not matter
    ],
)
def test_mtu(nl: FakeNetlink, network: base.Network, underlay: int, mtu: int) -> None:
    plugin = LinuxBridgePlugin(make_conf(underlay_mtu=underlay), netlink_api=nl)  # type: ignore[arg-type]
    assert plugin.interface_config(port(network)).mtu == mtu


# --- refused networks ------------------------------------------------------------------


def test_geneve_is_refused_everywhere(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    geneve = net("geneve", 5)
    for call in (
        lambda: plugin.ensure_network(geneve),
        lambda: plugin.plug(port(geneve), INSTANCE),
        lambda: plugin.interface_config(port(geneve)),
        lambda: plugin.update_topology(geneve, ["10.250.0.2"]),
    ):
        with pytest.raises(
            np_exception.NetworkTypeNotSupported, match="linux_bridge does not offer geneve"
        ):
            call()
    assert nl.calls == []
    plugin.unplug(port(geneve), INSTANCE)  # nothing to undo: fine
    plugin.delete_network(geneve)


@pytest.mark.parametrize(
    "network, match",
    [
        (net("vxlan", None), r"segment \(VNI\) in 1..16777215, not None"),
        (net("vxlan", 0), r"segment \(VNI\) in 1..16777215, not 0"),
        (net("vxlan", 2**24), r"not 16777216"),
        (net("vlan", 0), r"segment \(VLAN id\) in 1..4094"),
        (net("vlan", 4095), r"not 4095"),
        (net("flat", None, mtu=60), r"MTU 60, below the minimum 68"),
    ],
)
def test_invalid_networks(plugin: LinuxBridgePlugin, nl: FakeNetlink, network, match) -> None:
    with pytest.raises(cd_exception.Invalid, match=match):
        plugin.ensure_network(network)
    assert nl.calls == []


def test_vxlan_needs_local_ip(nl: FakeNetlink) -> None:
    plugin = LinuxBridgePlugin(make_conf(local_ip=None), netlink_api=nl)  # type: ignore[arg-type]
    with pytest.raises(cd_exception.InvalidConfig, match=r"\[linux_bridge\] local_ip is not set"):
        plugin.plug(port(net()), INSTANCE)
    assert nl.calls == []


def test_physical_network_must_be_mapped(nl: FakeNetlink) -> None:
    plugin = LinuxBridgePlugin(
        make_conf(physical_interface_mappings=["physnet1:eth1", "physnet2:eth2"]),
        netlink_api=nl,  # type: ignore[arg-type]
    )
    with pytest.raises(
        cd_exception.InvalidConfig, match=r"'physnet9' .* not in .*mappings \(physnet1, physnet2\)"
    ):
        plugin.ensure_network(net("flat", None, physical_network="physnet9"))
    with pytest.raises(cd_exception.InvalidConfig, match="names no physical network .* 2 entries"):
        plugin.ensure_network(net("flat", None))
    plugin.ensure_network(net("vlan", 7, physical_network="physnet2"))
    assert nl.links["eth2.7"].master == BRIDGE


def test_the_only_mapping_is_the_default(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    plugin.ensure_network(net("flat", None))
    assert nl.links["eth1"].master == BRIDGE


def test_bad_mac_is_refused_before_anything(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    with pytest.raises(cd_exception.Invalid, match="is a multicast MAC"):
        plugin.plug(port(net(), mac="01:00:5e:00:00:01"), INSTANCE)
    assert nl.calls == []


# --- plug and unplug ------------------------------------------------------------------


def test_plug_makes_bridge_and_vxlan_once(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    plugin.plug(port(net()), INSTANCE)
    plugin.plug(port(net()), INSTANCE)  # idempotent
    plugin.plug(port(net(), "p2"), INSTANCE)
    assert nl.calls.count(("ensure_bridge", (BRIDGE, 1450))) == 3
    assert ("ensure_vxlan", ("vxlan-101", 101, LOCAL_IP, 4789, 1450, BRIDGE)) in nl.calls
    assert nl.ports(BRIDGE) == ["vxlan-101"]


def test_plug_vlan_and_flat(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    plugin.plug(port(net("vlan", 42)), INSTANCE)
    assert ("ensure_vlan", ("eth1.42", "eth1", 42, 1500, BRIDGE)) in nl.calls
    flat = net("flat", None, id="flat-net")
    plugin.plug(port(flat, "p2"), INSTANCE)
    assert nl.ports("brqflat-net") == ["eth1"]


def test_unplug_of_the_last_port_removes_the_network(
    plugin: LinuxBridgePlugin, nl: FakeNetlink
) -> None:
    network = net()
    plugin.plug(port(network), INSTANCE)
    plugin.plug(port(network, "p2"), INSTANCE)
    plugin.unplug(port(network), INSTANCE)
    assert BRIDGE in nl.links
    plugin.unplug(port(network, "p2"), INSTANCE)
    assert BRIDGE not in nl.links and "vxlan-101" not in nl.links
    plugin.unplug(port(network, "p2"), INSTANCE)  # idempotent


def test_unplug_keeps_a_bridge_with_foreign_ports(
    plugin: LinuxBridgePlugin, nl: FakeNetlink
) -> None:
    network = net()
    plugin.plug(port(network), INSTANCE)
    nl.links["vnet0"] = netlink.Link("vnet0", 99, "tun", 1450, True, master=BRIDGE)
    plugin.unplug(port(network), INSTANCE)
    assert BRIDGE in nl.links and "vxlan-101" in nl.links


def test_unplug_never_deletes_the_physical_interface(
    plugin: LinuxBridgePlugin, nl: FakeNetlink
) -> None:
    flat = net("flat", None)
    plugin.plug(port(flat), INSTANCE)
    plugin.unplug(port(flat), INSTANCE)
    assert BRIDGE not in nl.links
    assert nl.links["eth1"].master is None


def test_unplug_for_another_instance_leaves_the_port(
    plugin: LinuxBridgePlugin, nl: FakeNetlink
) -> None:
    plugin.plug(port(net()), INSTANCE)
    plugin.unplug(port(net()), "some-other-instance")
    assert BRIDGE in nl.links
    with pytest.raises(cd_exception.InUse, match="ports p1 are plugged"):
        plugin.delete_network(net())


def test_a_port_stays_on_its_network(plugin: LinuxBridgePlugin) -> None:
    plugin.plug(port(net()), INSTANCE)
    with pytest.raises(
        cd_exception.NetworkError, match=f"port p1 failed: .*network {NET_ID} already"
    ):
        plugin.plug(port(net(id="other-network")), INSTANCE)


# --- topology ------------------------------------------------------------------------


def test_topology_is_kept_exact(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    network = net()
    plugin.update_topology(network, ["10.250.0.2"])  # remembered: no device yet
    assert "vxlan-101" not in nl.links
    plugin.ensure_network(network)
    assert nl.fdb["vxlan-101"] == {"10.250.0.2"}
    plugin.update_topology(network, ["10.250.0.3", LOCAL_IP, "10.250.0.3", "10.250.0.4"])
    assert nl.fdb["vxlan-101"] == {"10.250.0.3", "10.250.0.4"}
    plugin.update_topology(network, [])
    assert nl.fdb["vxlan-101"] == set()


def test_topology_of_flat_and_vlan_networks_is_ignored(
    plugin: LinuxBridgePlugin, nl: FakeNetlink
) -> None:
    plugin.update_topology(net("vlan", 5), ["10.250.0.2"])
    plugin.update_topology(net("flat", None), ["10.250.0.2"])
    assert nl.calls == []


@pytest.mark.parametrize(
    "endpoint, match",
    [
        ("10.250.0.300", "is not an IP address"),
        ("fd00::2", "is IPv6 but .* local_ip 10.250.0.1 is IPv4"),
    ],
)
def test_bad_remote_endpoints(plugin: LinuxBridgePlugin, endpoint: str, match: str) -> None:
    with pytest.raises(cd_exception.Invalid, match=match):
        plugin.update_topology(net(), ["10.250.0.2", endpoint])


# --- failures leave nothing half-made ---------------------------------------------------------


def test_failed_vxlan_removes_the_bridge_it_made(
    plugin: LinuxBridgePlugin, nl: FakeNetlink
) -> None:
    nl.fail["ensure_vxlan"] = netlink.LinkError(
        "create vxlan", "vxlan-101", "File exists", errno.EEXIST
    )
    with pytest.raises(cd_exception.NetworkError) as info:
        plugin.plug(port(net()), INSTANCE)
    assert str(info.value) == (
        f"Network operation plug on port p1 failed: network {NET_ID}: "
        "create vxlan vxlan-101: File exists"
    )
    assert info.value.kwargs == {
        "operation": "plug",
        "port": "p1",
        "reason": info.value.kwargs["reason"],
    }
    assert BRIDGE not in nl.links
    plugin.unplug(port(net()), INSTANCE)  # the port was not recorded: nothing to do


def test_failed_flood_list_removes_both_devices(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    plugin.update_topology(net(), ["10.250.0.2"])
    nl.fail["set_flood_destinations"] = netlink.LinkError(
        "add fdb entry to", "vxlan-101", "No buffer space"
    )
    with pytest.raises(cd_exception.NetworkError, match="No buffer space"):
        plugin.ensure_network(net())
    assert BRIDGE not in nl.links and "vxlan-101" not in nl.links


def test_failure_keeps_what_existed_before(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    plugin.ensure_network(net())
    nl.links.pop("vxlan-101")
    nl.fail["ensure_vxlan"] = netlink.LinkError(
        "create vxlan", "vxlan-101", "Operation not permitted"
    )
    with pytest.raises(cd_exception.NetworkError):
        plugin.ensure_network(net())
    assert BRIDGE in nl.links


def test_flat_interface_already_in_use(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    plugin.ensure_network(net("flat", None, id="flat-one"))
    with pytest.raises(cd_exception.NetworkError, match="eth1: is a port of bridge brqflat-one"):
        plugin.ensure_network(net("flat", None, id="flat-two"))
    assert "brqflat-two" not in nl.links


def test_flat_interface_checks(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    with pytest.raises(
        cd_exception.NetworkError, match="MTU 1500 is smaller than the network's 9000"
    ):
        plugin.ensure_network(net("flat", None, mtu=9000))
    del nl.links["eth1"]
    with pytest.raises(cd_exception.NetworkError, match="eth1: no such interface"):
        plugin.ensure_network(net("vlan", 3))
    assert nl.calls == []


def test_local_ip_must_be_on_this_host(nl: FakeNetlink) -> None:
    nl.address_set = {"192.0.2.1"}
    plugin = LinuxBridgePlugin(make_conf(), netlink_api=nl)  # type: ignore[arg-type]
    with pytest.raises(
        cd_exception.NetworkError, match="local_ip 10.250.0.1: it is not an address of this host"
    ):
        plugin.ensure_network(net())
    assert nl.calls == []


def test_network_redefined_or_colliding(plugin: LinuxBridgePlugin) -> None:
    plugin.ensure_network(net())
    with pytest.raises(cd_exception.NetworkError, match="set up here as vxlan network segment 101"):
        plugin.ensure_network(net(segment=102))
    with pytest.raises(cd_exception.NetworkError, match="would share bridge " + BRIDGE):
        plugin.ensure_network(net(id=NET_ID[:11] + "ffff"))


def test_netns_that_cannot_be_opened(monkeypatch) -> None:
    def refuse(netns: str | None) -> None:
        raise netlink.LinkError(
            "open netlink in", f"network namespace {netns!r}", "No such file or directory"
        )

    monkeypatch.setattr(netlink, "Netlink", refuse)
    plugin = LinuxBridgePlugin(make_conf(netns="cdt-none"))
    with pytest.raises(
        cd_exception.NetworkError, match="open netlink on port - failed: .*'cdt-none'"
    ):
        plugin.ensure_network(net())


# --- delete_network -------------------------------------------------------------------------


def test_delete_network(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    plugin.plug(port(net()), INSTANCE)
    with pytest.raises(cd_exception.InUse, match="ports p1 are plugged on this host"):
        plugin.delete_network(net())
    assert BRIDGE in nl.links
    plugin.unplug(port(net()), INSTANCE)
    plugin.ensure_network(net())
    nl.links["vnet0"] = netlink.Link("vnet0", 99, "tun", 1450, True, master=BRIDGE)
    with pytest.raises(
        cd_exception.InUse, match=f"bridge {BRIDGE} is in use: it still has ports vnet0"
    ):
        plugin.delete_network(net())
    del nl.links["vnet0"]
    plugin.delete_network(net())
    plugin.delete_network(net())  # idempotent
    assert BRIDGE not in nl.links and "vxlan-101" not in nl.links


def test_close(plugin: LinuxBridgePlugin, nl: FakeNetlink) -> None:
    plugin.close()
    assert nl.closed


def test_options_registered_by_the_service_first(nl: FakeNetlink) -> None:
    """compute_driver.conf registers list_opts() groups before the agent loads the plugin."""
    conf = cfg.ConfigOpts()
    for group, opts in linux_bridge.list_opts().items():
        conf.register_group(group)
        conf.register_opts(opts, group=group)
    conf([], project="unit", default_config_files=[])
    conf.set_override("local_ip", LOCAL_IP, group="linux_bridge")
    plugin = LinuxBridgePlugin(conf, netlink_api=nl)  # type: ignore[arg-type]
    assert plugin.interface_config(port(net())).mtu == 1450


# --- anti-spoofing (issue 17: linux_bridge had none) -------------------------------------


def test_the_tap_is_named_so_that_its_rules_find_it(plugin: LinuxBridgePlugin) -> None:
    config = plugin.interface_config(port(net(), port_id="9f2c6a1e-0000-4000-8000-0000000000aa"))
    assert config.target_dev == "tap9f2c6a1e-00"
    assert '<target dev="tap9f2c6a1e-00"/>' in config.to_string()


def test_plug_puts_the_ports_rules_in_and_unplug_takes_them_out(
    plugin: LinuxBridgePlugin, rules: FakePortFilter
) -> None:
    p = base.Port(id="p1", network=net(), mac="FA:16:3E:00:00:01", addresses=("10.0.0.5/24",))
    plugin.plug(p, INSTANCE)
    plugin.plug(p, INSTANCE)  # idempotent
    assert rules.rules == {"tapp1": ("FA:16:3E:00:00:01", ("10.0.0.5",))}
    plugin.unplug(p, INSTANCE)
    assert rules.rules == {}


def test_a_refused_rule_leaves_nothing_plugged(
    plugin: LinuxBridgePlugin, nl: FakeNetlink, rules: FakePortFilter
) -> None:
    rules.fail = np_exception.NftablesError(operation="plug tapp1", reason="no")
    with pytest.raises(cd_exception.NetworkError, match="nftables plug tapp1 failed: no"):
        plugin.plug(port(net()), INSTANCE)
    assert BRIDGE not in nl.links and "vxlan-101" not in nl.links
    assert plugin._ports == {}


def test_a_bad_address_is_refused_before_anything_changes(
    plugin: LinuxBridgePlugin, nl: FakeNetlink
) -> None:
    bad = base.Port(id="p1", network=net(), mac="fa:16:3e:00:00:01", addresses=("10.0.0.300",))
    with pytest.raises(cd_exception.Invalid, match="port p1"):
        plugin.plug(bad, INSTANCE)
    assert nl.calls == []
