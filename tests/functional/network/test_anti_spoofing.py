"""What a guest may not say on its network, on both plugins (issue 17), with crafted frames.

Two simulated hosts (netns_lab.py for linux_bridge, ovs_lab.py for ovs);
the "guests" are namespaces whose ``eth0`` is a veth with the tap's name in
a host. On one network: S (IPv4 and IPv6 addresses) and N on host A, R
(IPv4 only) on host B. S sends, with a packet socket, what a hostile guest
would: a DHCPv4 OFFER (udp 67->68), a DHCPv6 reply (547->546), a router
advertisement, a neighbour advertisement for N's address; then what it
may send: a neighbour advertisement for its own address and a broadcast
from its own address (the positive control, sent last: once it has
arrived everywhere, so would anything sent before it). R sends from its
IPv6 link-local address, which an IPv4-only port may use (Neutron allows
it). Every frame carries a marker; N and R (and S for R's frame) capture
what reaches their ``eth0``.
"""

from __future__ import annotations

import secrets
import subprocess
import uuid
from dataclasses import dataclass

from guest_frames import (
    captures,
    neighbour_advert,
    router_advert,
    send_raw,
    udp6_frame,
    udp_frame,
)
from netns_lab import Endpoint, Host, Lab
from ovs_lab import OvsLab

from network_plugins import base, nft_ports, segments, tap

INSTANCE = "0b6f2c5e-7a41-4c1e-9d2a-5b1f0e3c8a01"
TIMEOUT = 20.0  # seconds for the positive control to arrive (a busy 2-core machine)


@dataclass
class Guest:
    port: base.Port
    endpoint: Endpoint
    v6: str | None = None

    @property
    def link_local(self) -> str:
        return segments.link_local(self.port.mac)


def _ports(network: base.Network) -> list[base.Port]:
    addresses = [("10.251.0.11", "fd00::11"), ("10.251.0.12", "fd00::12"), ("10.251.0.21",)]
    return [
        base.Port(str(uuid.uuid4()), network, f"fa:16:3e:00:01:{n:02x}", a)
        for n, a in enumerate(addresses, start=1)
    ]


def _set_mac(endpoint: Endpoint, mac: str) -> None:
    subprocess.run(["ip", "-n", endpoint.netns, "link", "set", "eth0", "address", mac], check=True)
    endpoint.mac = mac


def _check(s: Guest, n: Guest, r: Guest) -> None:
    marker = secrets.token_hex(4).encode()
    bad = {
        b"dhcp-offer": udp_frame(
            s.port.mac, s.endpoint.ip, marker + b"dhcp-offer", port=68, src_port=67
        ),
        b"dhcp6-reply": udp6_frame(s.port.mac, str(s.v6), 547, 546, marker + b"dhcp6-reply"),
        b"router-advert": router_advert(s.port.mac, s.link_local, marker + b"router-advert"),
        b"na-of-other": neighbour_advert(s.port.mac, str(s.v6), str(n.v6), marker + b"na-of-other"),
    }
    good = [
        neighbour_advert(s.port.mac, str(s.v6), str(s.v6), marker + b"na-of-own"),
        udp_frame(s.port.mac, s.endpoint.ip, marker + b"sentinel"),
    ]
    link_local = udp6_frame(r.port.mac, r.link_local, 9, 9, marker + b"link-local")
    taps = {name: (g.endpoint.netns, "eth0") for name, g in (("S", s), ("N", n), ("R", r))}
    with captures(taps) as seen:
        send_raw(s.endpoint.netns, "eth0", [*bad.values(), *good])
        send_raw(r.endpoint.netns, "eth0", [link_local])
        for name in ("N", "R"):
            assert seen[name].wait_for(marker + b"sentinel", TIMEOUT), f"{name}: no sentinel"
            assert seen[name].seen(marker + b"na-of-own"), f"{name}: own NA dropped"
            leaked = [what for what in bad if seen[name].seen(marker + what)]
            assert leaked == [], f"{name} received {leaked}"
        for name in ("S", "N"):
            assert seen[name].wait_for(marker + b"link-local", TIMEOUT), f"{name}: no link-local"


# --- linux_bridge ---------------------------------------------------------------------


def test_linux_bridge_guests_cannot_serve_dhcp_or_advertise(
    lab: Lab, hosts: tuple[Host, Host]
) -> None:
    a, b = hosts
    plugin_a, plugin_b = lab.plugin(a), lab.plugin(b)
    network = base.Network(id=str(uuid.uuid4()), name="spoof", type="vxlan", segment=301)
    for plugin in (plugin_a, plugin_b):
        plugin.update_topology(network, [a.underlay_ip, b.underlay_ip])
    guests = []
    for port, host, plugin in zip(
        _ports(network), (a, a, b), (plugin_a, plugin_a, plugin_b), strict=True
    ):
        plugin.plug(port, INSTANCE)
        plugin.plug(port, INSTANCE)  # idempotent (an agent restart plugs again)
        config = plugin.interface_config(port)
        assert config.source_bridge and config.mtu and config.target_dev
        ip = str(port.addresses[0])
        endpoint = lab.endpoint(host, config.source_bridge, ip, config.mtu, config.target_dev)
        _set_mac(endpoint, port.mac)
        v6 = port.addresses[1] if len(port.addresses) > 1 else None
        guests.append(Guest(port, endpoint, v6))
    s, n, r = guests

    rules_a = nft_ports.PortFilter(a.netns)
    assert rules_a.ports() == {tap.tap_name(s.port.id), tap.tap_name(n.port.id)}
    elements = rules_a.elements(tap.tap_name(s.port.id))
    assert len(elements) == 7  # port, MAC, IPv4, 2 IPv6 (with link-local), 2 NA targets
    # an agent restart: a new plugin instance plugs the same port again, no duplicates
    lab.plugin(a).plug(s.port, INSTANCE)
    assert rules_a.elements(tap.tap_name(s.port.id)) == elements

    _check(s, n, r)

    for guest, plugin in zip(guests, (plugin_a, plugin_a, plugin_b), strict=True):
        lab.destroy(guest.endpoint)
        plugin.unplug(guest.port, INSTANCE)
    for host in (a, b):  # nothing left behind
        assert not nft_ports.PortFilter(host.netns).exists()


# --- ovs ------------------------------------------------------------------------------


def test_ovs_guests_cannot_serve_dhcp_or_advertise(ovs_lab: OvsLab) -> None:
    a, b = ovs_lab.build_hosts()
    plugin_a, plugin_b = a.plugin(), b.plugin()
    network = base.Network(id=str(uuid.uuid4()), name="spoof", type="vxlan", segment=301)
    for plugin in (plugin_a, plugin_b):
        plugin.update_topology(network, [a.underlay_ip, b.underlay_ip])
    guests = []
    for port, host, plugin in zip(
        _ports(network), (a, a, b), (plugin_a, plugin_a, plugin_b), strict=True
    ):
        plugin.plug(port, INSTANCE)
        config = plugin.interface_config(port)
        assert config.target_dev and config.mtu
        endpoint = ovs_lab.endpoint(host, config.target_dev, str(port.addresses[0]), config.mtu)
        _set_mac(endpoint, port.mac)
        v6 = port.addresses[1] if len(port.addresses) > 1 else None
        guests.append(Guest(port, endpoint, v6))
    s, n, r = guests
    _check(s, n, r)
