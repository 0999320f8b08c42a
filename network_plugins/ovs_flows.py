"""OpenFlow rules of the ``ovs`` plugin, and the OpenFlow bundles that install them.

The rules are plain data (:class:`Flow`), built by pure functions, so the
unit tests check them without a switch. Layout (Neutron's OVS agent,
smaller; every bridge but the provider bridges has ``fail_mode=secure``,
so an empty table drops)::

  integration bridge            table 0  CLASSIFY: from patch-tun -> NORMAL (already tagged);
                                         from a provider patch: segment/untagged -> local VLAN,
                                         NORMAL, anything else dropped; the rest -> table 10
                                table 10 INGRESS: per guest port (in_port), untagged frames
                                         only: its own MAC and, per address, ARP with that sender
                                         IP/MAC, DHCP discovery -> NORMAL; IPv4/IPv6 from its
                                         addresses (and its MAC's IPv6 link-local address, and
                                         DAD/MLD from ::) -> 11; default drop
                                table 11 GUEST_PROTOCOLS: what no guest may say: DHCPv4/v6
                                         server replies, router advertisements and redirects
                                         dropped; neighbour advertisements only for the port's
                                         own addresses with its MAC (per port), solicitations
                                         only with its MAC; the rest -> NORMAL
                                table 23 CANARY: one flow; gone = ovs-vswitchd lost its flows
  tunnel bridge                 table 0  from patch-int -> 20; from a tunnel port -> 4; default drop
                                table 4  INBOUND: (tunnel port, VNI, remote VTEP) -> local VLAN
                                table 20 OUTBOUND: local VLAN -> VNI, a copy to each remote VTEP
  provider bridges (operator's) table 0  from our patch: local VLAN -> segment (vlan) or untagged
                                         (flat), NORMAL; the rest of our patch's traffic dropped

Guest ports are access ports of their network's local VLAN (``Port.tag``),
so NORMAL keeps networks apart on the integration bridge; the tunnel and
provider rules translate between local VLANs and segments.

Cookies say whose a rule is: ``0xcd`` in the top byte, then a kind and an
id (the local VLAN for a network's rules, the OpenFlow port for a guest
port's), so that a logical change deletes exactly its own rules.

NOTE: rules go in through :mod:`network_plugins.openflow` (an in-process
OpenFlow 1.4 client on the bridge's management socket, one persistent
connection per bridge): ovsdbapp has no OpenFlow API, and a process of
``ovs-ofctl`` per change cost more than the OVSDB write of a plug. Each
logical change on a bridge is one bundle, one atomic commit (its deletes
and adds land together or not at all); a change that touches several
bridges is one bundle per bridge. The rules are written in ovs-ofctl's
syntax (what logs and ``ovs-ofctl dump-flows`` show), turned into OpenFlow
in one place (:func:`flow_mod`).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import threading
from collections.abc import Iterable

from network_plugins import openflow, segments

COOKIE_BASE = 0xCD << 56
COOKIE_OURS_MASK = 0xFF << 56
KIND_BASE = 1  # the fixed rules of a bridge
KIND_NETWORK = 2  # id: the network's local VLAN
KIND_PORT = 3  # id: the guest port's OpenFlow port number
KIND_CANARY = 4

# integration bridge
CLASSIFY = 0
INGRESS = 10
GUEST_PROTOCOLS = 11
CANARY = 23
# tunnel bridge
INBOUND = 4
OUTBOUND = 20

NORMAL = "NORMAL"
TO_GUEST_PROTOCOLS = f"goto_table:{GUEST_PROTOCOLS}"

# ICMPv6 types (RFC 4861, RFC 3810)
ND_ROUTER_ADVERT = 134
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_REDIRECT = 137
MLD2_REPORT = 143
NO_LLADDR = "00:00:00:00:00:00"  # what OVS matches when an ND message has no link-layer option


def cookie(kind: int, ident: int = 0) -> int:
    return COOKIE_BASE | kind << 32 | ident


@dataclasses.dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: str  # ovs-ofctl match fields, comma separated ('' matches everything)
    actions: str
    cookie: int

    def text(self) -> str:
        head = f"cookie={self.cookie:#x},table={self.table},priority={self.priority}"
        if self.match:
            head += "," + self.match
        return f"{head},actions={self.actions}"


@dataclasses.dataclass(frozen=True)
class Deletion:
    """Every rule with exactly ``cookie`` (in ``table`` when given)."""

    cookie: int
    mask: int = (1 << 64) - 1
    table: int | None = None

    def text(self) -> str:
        text = f"cookie={self.cookie:#x}/{self.mask:#x}"
        if self.table is not None:
            text += f",table={self.table}"
        return text


# --- integration bridge --------------------------------------------------------


def integration_base(patch_tun: int, provider_patches: Iterable[int]) -> list[Flow]:
    c = cookie(KIND_BASE)
    flows = [
        Flow(CLASSIFY, 0, "", f"goto_table:{INGRESS}", c),
        Flow(CLASSIFY, 50, f"in_port={patch_tun}", NORMAL, c),
        Flow(INGRESS, 0, "", "drop", c),
        Flow(CANARY, 0, "", "drop", cookie(KIND_CANARY)),
        # NOTE: only guest ports' traffic gets here (table 10). A guest is never
        # a DHCP server or a router on its network: their messages are dropped
        # whatever the source address (Neutron drops the same); neighbour
        # discovery passes only as a port's own rules (priority 100) allow.
        Flow(GUEST_PROTOCOLS, 0, "", NORMAL, c),
        Flow(GUEST_PROTOCOLS, 50, "udp,tp_src=67,tp_dst=68", "drop", c),
        Flow(GUEST_PROTOCOLS, 50, "udp6,tp_src=547,tp_dst=546", "drop", c),
        Flow(GUEST_PROTOCOLS, 50, f"icmp6,icmp_type={ND_ROUTER_ADVERT}", "drop", c),
        Flow(GUEST_PROTOCOLS, 50, f"icmp6,icmp_type={ND_REDIRECT}", "drop", c),
        Flow(GUEST_PROTOCOLS, 40, f"icmp6,icmp_type={ND_NEIGHBOR_ADVERT}", "drop", c),
        Flow(GUEST_PROTOCOLS, 40, f"icmp6,icmp_type={ND_NEIGHBOR_SOLICIT}", "drop", c),
    ]
    # NOTE: a provider patch's traffic is only taken when a network's rule
    # (priority 100) translates its segment; the rest must not reach table 10.
    flows += [Flow(CLASSIFY, 50, f"in_port={ofport}", "drop", c) for ofport in provider_patches]
    return flows


def guest_port(ofport: int, mac: str, addresses: Iterable[str]) -> list[Flow]:
    """Anti-spoofing: what port ``ofport`` may send; the rest is dropped.

    Only untagged frames from its own MAC: an 802.1Q header from a guest is
    dropped here even if the port itself stopped being an access port of
    its network. With addresses: ARP as itself and DHCP discovery go to
    NORMAL; IPv4 and IPv6 from its addresses, from its MAC's link-local
    address (every port, IPv4-only ones too: a guest's kernel sends from it
    as soon as its NIC is up) and duplicate address detection and MLD
    reports from ``::`` go through table 11. A port without addresses is
    checked on its MAC only (an L2-only network has no IPAM to check
    against), and table 11 still applies. Table 11 lets neighbour
    advertisements through only for the port's own addresses (any, without
    addresses) with its MAC or none as target link-layer address, and
    solicitations only with its MAC or none as source link-layer address.
    """
    c = cookie(KIND_PORT, ofport)
    own = f"in_port={ofport},vlan_tci=0x0000/0x1fff,dl_src={mac}"
    ips = [ipaddress.ip_interface(a).ip for a in addresses]
    nd = f"in_port={ofport},icmp6,icmp_type="
    flows = [
        Flow(GUEST_PROTOCOLS, 100, f"{nd}{ND_NEIGHBOR_SOLICIT},nd_sll={lladdr}", NORMAL, c)
        for lladdr in (mac, NO_LLADDR)
    ]
    if not ips:
        flows += [
            Flow(GUEST_PROTOCOLS, 100, f"{nd}{ND_NEIGHBOR_ADVERT},nd_tll={lladdr}", NORMAL, c)
            for lladdr in (mac, NO_LLADDR)
        ]
        return [Flow(INGRESS, 90, own, TO_GUEST_PROTOCOLS, c), *flows]
    v4 = [ip for ip in ips if ip.version == 4]
    v6 = [ip for ip in ips if ip.version == 6]
    for ip in v4:
        flows.append(Flow(INGRESS, 100, f"{own},arp,arp_sha={mac},arp_spa={ip}", NORMAL, c))
        flows.append(Flow(INGRESS, 100, f"{own},ip,nw_src={ip}", TO_GUEST_PROTOCOLS, c))
    if v4:  # DHCP discovery, before the guest has its address
        flows.append(Flow(INGRESS, 100, f"{own},udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67", NORMAL, c))
    for ip6 in [*v6, ipaddress.IPv6Address(segments.link_local(mac))]:
        flows.append(Flow(INGRESS, 100, f"{own},ipv6,ipv6_src={ip6}", TO_GUEST_PROTOCOLS, c))
        for lladdr in (mac, NO_LLADDR):
            match = f"{nd}{ND_NEIGHBOR_ADVERT},nd_target={ip6},nd_tll={lladdr}"
            flows.append(Flow(GUEST_PROTOCOLS, 100, match, NORMAL, c))
    for icmp_type in (ND_NEIGHBOR_SOLICIT, MLD2_REPORT):  # DAD, before it has an address
        match = f"{own},icmp6,ipv6_src=::,icmp_type={icmp_type}"
        flows.append(Flow(INGRESS, 100, match, TO_GUEST_PROTOCOLS, c))
    return flows


def provider_in(patch: int, vlan: int, segment: int | None) -> list[Flow]:
    """Integration side: the segment (None: untagged, flat) of a provider patch -> local VLAN."""
    match = f"in_port={patch}," + (
        f"dl_vlan={segment}" if segment is not None else "vlan_tci=0x0000/0x1fff"
    )
    return [Flow(CLASSIFY, 100, match, f"mod_vlan_vid:{vlan},{NORMAL}", cookie(KIND_NETWORK, vlan))]


# --- provider bridge -----------------------------------------------------------


def provider_base(patch: int) -> list[Flow]:
    return [Flow(CLASSIFY, 2, f"in_port={patch}", "drop", cookie(KIND_BASE))]


def provider_out(patch: int, vlan: int, segment: int | None) -> list[Flow]:
    """Provider side: local VLAN from our patch -> the segment (None: untagged), NORMAL."""
    actions = f"mod_vlan_vid:{segment}" if segment is not None else "strip_vlan"
    return [
        Flow(
            CLASSIFY,
            4,
            f"in_port={patch},dl_vlan={vlan}",
            f"{actions},{NORMAL}",
            cookie(KIND_NETWORK, vlan),
        )
    ]


# --- tunnel bridge ---------------------------------------------------------------


def tunnel_base(patch_int: int, tunnel_ports: Iterable[int]) -> list[Flow]:
    c = cookie(KIND_BASE)
    flows = [
        Flow(CLASSIFY, 0, "", "drop", c),
        Flow(CLASSIFY, 1, f"in_port={patch_int}", f"goto_table:{OUTBOUND}", c),
        Flow(INBOUND, 0, "", "drop", c),
        Flow(OUTBOUND, 0, "", "drop", c),
    ]
    flows += [Flow(CLASSIFY, 1, f"in_port={p}", f"goto_table:{INBOUND}", c) for p in tunnel_ports]
    return flows


def tunnel_network(
    tunnel_port: int, patch_int: int, vni: int, vlan: int, remotes: Iterable[str]
) -> list[Flow]:
    """A network's tunnels: from and to exactly ``remotes`` (no rules without remotes)."""
    c = cookie(KIND_NETWORK, vlan)
    addresses = sorted(ipaddress.ip_address(r) for r in remotes)
    if not addresses:
        return []
    flows = []
    outputs = []
    for address in addresses:
        field = "tun_src" if address.version == 4 else "tun_ipv6_src"
        flows.append(
            Flow(
                INBOUND,
                100,
                f"in_port={tunnel_port},tun_id={vni:#x},{field}={address}",
                f"mod_vlan_vid:{vlan},output:{patch_int}",
                c,
            )
        )
        dst = "tun_dst" if address.version == 4 else "tun_ipv6_dst"
        outputs.append(f"set_field:{address}->{dst},output:{tunnel_port}")
    actions = f"strip_vlan,set_field:{vni:#x}->tun_id," + ",".join(outputs)
    flows.append(Flow(OUTBOUND, 100, f"dl_vlan={vlan}", actions, c))
    return flows


# --- to OpenFlow ------------------------------------------------------------------------
#
# NOTE: the rules above are written in ovs-ofctl's syntax (what logs and
# ``ovs-ofctl dump-flows`` show); this is the one place that turns that
# subset into OpenFlow messages. A field or action outside it is a
# ValueError: a rule this module builds, caught by the unit tests.

_MAC = "mac"
_IPV4 = "ipv4"
_IPV6 = "ipv6"
_MATCH_FIELDS: dict[str, tuple[openflow.Field, str]] = {
    "in_port": (openflow.IN_PORT, "int"),
    "dl_src": (openflow.ETH_SRC, _MAC),
    "dl_vlan": (openflow.VLAN_VID, "vlan"),
    "arp_sha": (openflow.ARP_SHA, _MAC),
    "arp_spa": (openflow.ARP_SPA, _IPV4),
    "nw_src": (openflow.IPV4_SRC, _IPV4),
    "ipv6_src": (openflow.IPV6_SRC, _IPV6),
    # NOTE: our rules only match ICMPv6 types (icmp6), never ICMPv4 ones
    "icmp_type": (openflow.ICMPV6_TYPE, "int"),
    "nd_target": (openflow.IPV6_ND_TARGET, _IPV6),
    "nd_sll": (openflow.IPV6_ND_SLL, _MAC),
    "nd_tll": (openflow.IPV6_ND_TLL, _MAC),
    "tp_src": (openflow.UDP_SRC, "int"),  # NOTE: our rules only use UDP ports (DHCP)
    "tp_dst": (openflow.UDP_DST, "int"),
    "tun_id": (openflow.TUNNEL_ID, "int"),
    "tun_src": (openflow.TUN_IPV4_SRC, _IPV4),
    "tun_ipv6_src": (openflow.TUN_IPV6_SRC, _IPV6),
}
_SET_FIELDS: dict[str, tuple[openflow.Field, str]] = {
    "tun_id": (openflow.TUNNEL_ID, "int"),
    "tun_dst": (openflow.TUN_IPV4_DST, _IPV4),
    "tun_ipv6_dst": (openflow.TUN_IPV6_DST, _IPV6),
}
# shorthands: (eth_type, ip_proto)
_PROTOCOLS = {
    "arp": (0x0806, None),
    "ip": (0x0800, None),
    "ipv6": (0x86DD, None),
    "udp": (0x0800, 17),
    "udp6": (0x86DD, 17),
    "icmp6": (0x86DD, 58),
}


def _value(kind: str, field: openflow.Field, text: str) -> bytes:
    if kind == _MAC:
        return bytes(int(octet, 16) for octet in text.split(":"))
    if kind in (_IPV4, _IPV6):
        return ipaddress.ip_address(text).packed
    number = int(text, 0)
    if kind == "vlan":
        number |= openflow.VID_PRESENT
    return number.to_bytes(field[2], "big")


def _match(text: str) -> tuple[bytes, bool]:
    """The OXM match of ovs-ofctl match ``text``, and whether it matches a VLAN tag."""
    fields: dict[openflow.Field, bytes] = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name in _PROTOCOLS and not value:
            eth_type, proto = _PROTOCOLS[name]
            fields[openflow.ETH_TYPE] = eth_type.to_bytes(2, "big")
            if proto is not None:
                fields[openflow.IP_PROTO] = bytes([proto])
        elif name == "vlan_tci" and value == "0x0000/0x1fff":
            fields[openflow.VLAN_VID] = bytes(2)  # no tag at all
        elif name in _MATCH_FIELDS:
            field, kind = _MATCH_FIELDS[name]
            fields[field] = _value(kind, field, value)
        else:
            raise ValueError(f"match field {item!r} has no OpenFlow encoding here")
    tagged = fields.get(openflow.VLAN_VID, bytes(2)) != bytes(2)
    # (class, number) order puts every prerequisite before the fields needing it
    ordered = sorted(fields.items(), key=lambda item: (-item[0][0], item[0][1]))
    return openflow.match(ordered), tagged


def _instructions(text: str, tagged: bool) -> bytes:
    """The instructions of ovs-ofctl ``actions=text``; ``tagged``: the packet has a VLAN tag."""
    actions: list[bytes] = []
    goto = b""
    for item in filter(None, text.split(",")):
        name, _, value = item.partition(":")
        if item == NORMAL:
            actions.append(openflow.output(openflow.PORT_NORMAL))
        elif item == "drop":
            pass
        elif name == "output":
            actions.append(openflow.output(int(value)))
        elif name == "goto_table":
            goto = openflow.goto_table(int(value))
        elif item == "strip_vlan":
            actions.append(openflow.pop_vlan())
            tagged = False
        elif name == "mod_vlan_vid":
            # NOTE: as ovs-ofctl does, mod_vlan_vid on an untagged packet pushes a tag first
            if not tagged:
                actions.append(openflow.push_vlan())
                tagged = True
            field = openflow.VLAN_VID
            actions.append(openflow.set_field(field, _value("vlan", field, value)))
        elif name == "set_field" and "->" in value:
            new, _, target = value.partition("->")
            if target not in _SET_FIELDS:
                raise ValueError(f"action {item!r} has no OpenFlow encoding here")
            field, kind = _SET_FIELDS[target]
            actions.append(openflow.set_field(field, _value(kind, field, new)))
        else:
            raise ValueError(f"action {item!r} has no OpenFlow encoding here")
    return (openflow.apply_actions(actions) if actions else b"") + goto


@functools.lru_cache(maxsize=8192)
def flow_mod(flow: Flow) -> bytes:
    """OFPFC_ADD of ``flow`` (xid 0: the connection numbers it)."""
    match_bytes, tagged = _match(flow.match)
    return openflow.flow_mod(
        0,
        openflow.ADD,
        table=flow.table,
        priority=flow.priority,
        cookie=flow.cookie,
        match_bytes=match_bytes,
        instructions=_instructions(flow.actions, tagged),
    )


def deletion_mod(deletion: Deletion) -> bytes:
    """OFPFC_DELETE (not strict: any match) of the rules with ``deletion``'s cookie."""
    return openflow.flow_mod(
        0,
        openflow.DELETE,
        table=openflow.TABLE_ALL if deletion.table is None else deletion.table,
        cookie=deletion.cookie,
        cookie_mask=deletion.mask,
    )


class OpenFlowBridges:
    """The plugin's OpenFlow side: one :class:`openflow.Connection` per bridge, opened on use.

    Each call is one atomic bundle on one bridge. Errors are
    :class:`network_plugins.exception.OpenFlowError`.
    """

    def __init__(self, run_dir: str, timeout: float) -> None:
        self.run_dir = run_dir
        self.timeout = timeout
        self._connections: dict[str, openflow.Connection] = {}
        self._lock = threading.Lock()

    def connection(self, bridge: str) -> openflow.Connection:
        with self._lock:
            conn = self._connections.get(bridge)
            if conn is None:
                path = os.path.join(self.run_dir, f"{bridge}.mgmt")
                conn = self._connections[bridge] = openflow.Connection(path, bridge, self.timeout)
            return conn

    def apply(self, bridge: str, delete: Iterable[Deletion] = (), add: Iterable[Flow] = ()) -> None:
        """Delete then add, as one bundle (one atomic commit on ``bridge``)."""
        mods = [deletion_mod(d) for d in delete] + [flow_mod(f) for f in add]
        if mods:
            self.connection(bridge).bundle(mods)

    def replace(self, bridge: str, flows: Iterable[Flow]) -> None:
        """Make ``flows`` the only rules of ``bridge``, as one bundle."""
        # NOTE: delete-all then add in one atomic commit: the same end state as
        # ovs-ofctl replace-flows (which sends a diff), no window without rules.
        everything = Deletion(0, mask=0)
        self.apply(bridge, delete=[everything], add=flows)

    def has(self, bridge: str, table: int, flow_cookie: int) -> bool:
        """Whether ``bridge`` has a rule with exactly ``flow_cookie`` in ``table``."""
        return bool(self.connection(bridge).flow_stats(table, flow_cookie))

    def close(self) -> None:
        with self._lock:
            for conn in self._connections.values():
                conn.close()
            self._connections.clear()
