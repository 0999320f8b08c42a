"""The ``ovs`` plugin's names beside Neutron/OVN, and the move from the names before issue 17.

Before issue 17 the plugin used ``br-int``/``br-tun`` by default, Neutron's
``external_ids`` keys (iface-id, attached-mac, vm-uuid, iface-status) on
its ports, and fixed patch and tunnel port names (patch-tun/patch-int,
cd-vxlan): a Neutron OVS agent or ovn-controller on the same host would
claim its ports, and two instances collided. Host A is put in exactly the
state that version left (:func:`_as_before_issue_17`), with a guest that
reaches a guest on host B; then the agent restarts (a new plugin instance
with today's defaults): the guest still reaches B, and nothing of the old
names is left.
"""

from __future__ import annotations

import json
import subprocess
import uuid

from netns_lab import ping
from ovs_lab import OvsHost, OvsLab

from network_plugins import base, ovs

INSTANCE = "0b6f2c5e-7a41-4c1e-9d2a-5b1f0e3c8a01"
NEUTRON_KEYS = {"iface-id", "attached-mac", "vm-uuid", "iface-status"}


def _map(host: OvsHost, table: str, name: str, column: str = "external_ids") -> dict[str, str]:
    found = json.loads(
        host.vsctl("--format=json", f"--columns={column}", "find", table, f"name={name}")
    )
    (row,) = found["data"]
    return dict(row[0][1])


def _as_before_issue_17(host: OvsHost, port: base.Port) -> None:
    """Rewrite what today's plugin made on br-int/br-tun into what the version before wrote."""
    tap = ovs.tap_name(port.id)
    ids = _map(host, "Interface", tap)
    old_ids = {
        "iface-id": ids[ovs.IFACE_PORT],
        "attached-mac": ids[ovs.IFACE_MAC],
        "vm-uuid": ids[ovs.IFACE_INSTANCE],
        "iface-status": "active",
        "cd-network-id": ids[ovs.IFACE_NETWORK],
        "cd-addresses": ids[ovs.IFACE_ADDRESSES],
    }
    record = _map(host, "Bridge", "br-int")[ovs.NETWORK_KEY + port.network.id]
    int_side, tun_side = ovs.tunnel_patch_names("br-int", "br-tun")
    vxlan = ovs.tunnel_port_name("br-tun", "vxlan")
    local_ip = _map(host, "Interface", vxlan, "options")["local_ip"]
    host.vsctl(
        "clear", "Interface", tap, "external_ids",
        "--", "set", "Interface", tap,
        *(f"external_ids:{k}={json.dumps(v)}" for k, v in old_ids.items()),
        "--", "clear", "Bridge", "br-int", "external_ids",
        "--", "set", "Bridge", "br-int",
        f"external_ids:cd-network-{port.network.id}={json.dumps(record)}",
        "--", "del-port", "br-int", int_side, "--", "del-port", "br-tun", tun_side,
        "--", "del-port", "br-tun", vxlan,
    )  # fmt: skip
    # NOTE: added once the old ones are gone, so that they get the same OpenFlow ports
    host.vsctl(
        "add-port", "br-int", "patch-tun", "--", "set", "Interface", "patch-tun",
        "type=patch", "options:peer=patch-int", "ofport_request=1",
        "--", "add-port", "br-tun", "patch-int", "--", "set", "Interface", "patch-int",
        "type=patch", "options:peer=patch-tun", "ofport_request=1",
        "--", "add-port", "br-tun", "cd-vxlan", "--", "set", "Interface", "cd-vxlan",
        "type=vxlan", "options:remote_ip=flow", "options:key=flow",
        f"options:local_ip={local_ip}", "ofport_request=2",
    )  # fmt: skip


def _set_mac(ns: str, mac: str) -> None:
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "address", mac], check=True)


def test_a_restart_moves_an_old_hosts_ports_to_names_neutron_does_not_use(
    ovs_lab: OvsLab,
) -> None:
    a, b = ovs_lab.build_hosts()
    old = a.plugin(integration_bridge="br-int", tunnel_bridge="br-tun")
    plugin_b = b.plugin()
    network = base.Network(id=str(uuid.uuid4()), name="old", type="vxlan", segment=401)
    ports = [
        base.Port(str(uuid.uuid4()), network, f"fa:16:3e:00:04:{n:02x}", (f"10.251.0.{n}",))
        for n in (41, 42)
    ]
    endpoints = []
    for port, host, plugin in ((ports[0], a, old), (ports[1], b, plugin_b)):
        plugin.update_topology(network, [a.underlay_ip, b.underlay_ip])
        plugin.plug(port, INSTANCE)
        config = plugin.interface_config(port)
        assert config.target_dev and config.mtu
        endpoint = ovs_lab.endpoint(host, config.target_dev, port.addresses[0], config.mtu)
        _set_mac(endpoint.netns, port.mac)
        endpoint.mac = port.mac
        endpoints.append(endpoint)
    old.close()
    _as_before_issue_17(a, ports[0])
    guest_a, guest_b = endpoints
    assert ping(guest_a, guest_b, deadline=10) >= 3  # the old names carry traffic

    fresh = a.plugin()  # the agent restarts with today's defaults
    assert fresh.check_and_resync() is True
    assert ping(guest_a, guest_b, deadline=10) >= 3

    tap = ovs.tap_name(ports[0].id)
    bridges = set(a.vsctl("list-br").split())
    assert {"br-int", "br-tun"}.isdisjoint(bridges) and {"br-cd-int", "br-cd-tun"} <= bridges
    assert a.vsctl("port-to-br", tap).strip() == "br-cd-int"
    ids = _map(a, "Interface", tap)
    assert NEUTRON_KEYS.isdisjoint(ids) and ids[ovs.IFACE_PORT] == ports[0].id
    assert not any(k.startswith("cd-") for k in ids)
    bridge_ids = _map(a, "Bridge", "br-cd-int")
    assert set(bridge_ids) == {ovs.NETWORK_KEY + network.id}
    names = set(a.vsctl("--columns=name", "--bare", "list", "Interface").split())
    assert {"patch-int", "patch-tun", "cd-vxlan"}.isdisjoint(names)
    assert {"br-cd-int-tun", "br-cd-tun-int", "br-cd-tun-vx"} <= names

    again = a.plugin()  # a second restart finds nothing to move
    assert again.check_and_resync() is True
    assert ping(guest_a, guest_b, deadline=10) >= 3
    again.unplug(ports[0], INSTANCE)
    assert tap not in a.vsctl("list-ports", "br-cd-int")
    assert _map(a, "Bridge", "br-cd-int") == {}


def test_two_instances_on_one_switch_share_no_name(ovs_lab: OvsLab) -> None:
    """Fails before issue 17: both instances used patch-int/patch-tun and cd-vxlan."""
    a, _ = ovs_lab.build_hosts()
    first = a.plugin()
    second = a.plugin(integration_bridge="br-x-int", tunnel_bridge="br-x-tun", bridge_mappings=[])
    network = base.Network(id=str(uuid.uuid4()), name="n", type="vxlan", segment=7)
    first.ensure_network(network)
    second.ensure_network(network)
    # each instance's patch pair is between its own bridges
    assert a.vsctl("list-ports", "br-cd-tun").split()[0] == "br-cd-tun-int"
    assert a.vsctl("list-ports", "br-x-tun").split()[0] == "br-x-tun-int"
    assert a.vsctl("get", "Interface", "br-x-int-tun", "options:peer").strip() == "br-x-tun-int"
