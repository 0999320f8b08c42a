"""Anti-spoofing rules for guest taps on Linux bridges: nftables, bridge family, stateless.

One table ``bridge cd-antispoof`` per host (or per ``netns``): a base chain
on the bridge's prerouting hook with one rule, ``iifname vmap @ports``; the
map sends each guest tap's frames to that port's own chain
``port-<tap>``, which drops what the port may not send and accepts the
rest. Frames from every other bridge port (uplinks, VXLAN devices) meet no
rule. The same policy as the ``ovs`` plugin's (:func:`ovs_flows.guest_port`):

* only untagged frames from the port's own MAC;
* never a DHCPv4 or DHCPv6 server reply, a router advertisement or a
  redirect (every port, with or without addresses, as Neutron does);
* with addresses: ARP only as itself; IPv4 from its addresses and DHCP
  discovery from 0.0.0.0; IPv6 from its addresses and from its MAC's
  link-local address (IPv4-only ports too), duplicate address detection and
  MLD reports from ``::``; neighbour advertisements only for those
  addresses; nothing else. Without addresses: the MAC check only.

NOTE: stateless on purpose: this kernel has no bridge-family conntrack
(``NF_CONNTRACK_BRIDGE``), and none of these checks needs state. The
protocol matches use ``meta l4proto`` and the transport header offset the
kernel found, so IPv6 extension headers do not hide an ICMPv6 or UDP
header. nftables has no match for the ND options, so (unlike the ``ovs``
plugin) the link-layer address inside a neighbour advertisement is not
checked; the frame's own source MAC is.

Rules are keyed on the tap's *name*, so they are in place before libvirt
creates the tap (the plugin names it in ``<target dev=>``). Every change is
one nftables transaction (atomic), written as nftables JSON through
libnftables (Debian's python3-nftables binding), never as a command line:
a plug replaces the port's chain (flush then add: idempotent, so a re-plug
after an agent restart duplicates nothing); an unplug removes the port's
map element and chain, and the table with its last port.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable
from typing import Any

from network_plugins import exception, tap
from network_plugins.segments import link_local

FAMILY = "bridge"
TABLE = "cd-antispoof"
MAP = "ports"
BASE_CHAIN = "prerouting"
PRIORITY_FILTER = -200
CHAIN_PREFIX = "port-"

Expr = dict[str, Any]
Rule = list[Expr]


def chain_name(tap_name: str) -> str:
    return CHAIN_PREFIX + tap_name


# --- rules (pure) ----------------------------------------------------------------


def _match(left: Expr, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol: str, field: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": field}}


def _one_or_set(values: list[str]) -> Any:
    return values[0] if len(values) == 1 else {"set": values}


ETHER_TYPE = _payload("ether", "type")
L4PROTO = {"meta": {"key": "l4proto"}}
ICMPV6_TYPE = _payload("icmpv6", "type")
# NOTE: the target address of a neighbour advertisement (RFC 4861 4.4), after
# type, code, checksum and flags; nftables 1.0.6 has no name for it.
ND_TARGET = {"payload": {"base": "th", "offset": 64, "len": 128}}
DROP: Expr = {"drop": None}
ACCEPT: Expr = {"accept": None}


def _udp(ether_type: str, sport: int, dport: int) -> Rule:
    return [
        _match(ETHER_TYPE, ether_type),
        _match(L4PROTO, "udp"),
        _match(_payload("udp", "sport"), sport),
        _match(_payload("udp", "dport"), dport),
    ]


def port_rules(mac: str, addresses: Iterable[str]) -> list[Rule]:
    """The rules of a port's chain, in order (first match wins), as nftables JSON expressions."""
    mac = mac.lower()
    ips = [ipaddress.ip_interface(a).ip for a in addresses]
    rules: list[Rule] = [
        [_match(_payload("ether", "saddr"), mac, "!="), DROP],
        [_match(ETHER_TYPE, {"set": ["8021q", "8021ad"]}), DROP],
        # no guest is a DHCP server or a router on its network
        _udp("ip", 67, 68) + [DROP],
        _udp("ip6", 547, 546) + [DROP],
        [_match(ICMPV6_TYPE, {"set": ["nd-router-advert", "nd-redirect"]}), DROP],
    ]
    if not ips:
        return rules  # the MAC check only (no IPAM on an L2-only network); the policy accepts
    v4 = [str(ip) for ip in ips if ip.version == 4]
    v6 = [str(ip) for ip in ips if ip.version == 6] + [link_local(mac)]
    hex6 = ["0x" + ipaddress.IPv6Address(a).packed.hex() for a in v6]
    rules.append(
        [
            _match(ICMPV6_TYPE, "nd-neighbor-advert"),
            _match(ND_TARGET, _one_or_set(hex6), "!="),
            DROP,
        ]
    )
    if v4:
        rules.append(
            [
                _match(_payload("arp", "saddr ether"), mac),
                _match(_payload("arp", "saddr ip"), _one_or_set(v4)),
                ACCEPT,
            ]
        )
        rules.append([_match(_payload("ip", "saddr"), _one_or_set(v4)), ACCEPT])
        rules.append([_match(_payload("ip", "saddr"), "0.0.0.0"), *_udp("ip", 68, 67)[2:], ACCEPT])
    rules.append([_match(_payload("ip6", "saddr"), _one_or_set(v6)), ACCEPT])
    rules.append(
        [
            _match(_payload("ip6", "saddr"), "::"),
            _match(ICMPV6_TYPE, {"set": ["nd-neighbor-solicit", "mld2-listener-report"]}),
            ACCEPT,
        ]
    )
    rules.append([DROP])
    return rules


# --- transactions (pure) ---------------------------------------------------------


def _where(**more: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **more}


def _skeleton() -> list[dict[str, Any]]:
    """The table, the map and the base chain with its one rule (idempotent)."""
    base = _where(name=BASE_CHAIN)
    vmap = {"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@" + MAP}}
    return [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"map": _where(name=MAP, type="ifname", map="verdict")}},
        {
            "add": {
                "chain": {
                    **base,
                    "type": "filter",
                    "hook": "prerouting",
                    "prio": PRIORITY_FILTER,
                    "policy": "accept",
                }
            }
        },
        {"flush": {"chain": base}},
        {"add": {"rule": {**_where(chain=BASE_CHAIN), "expr": [vmap]}}},
    ]


def _element(tap_name: str) -> dict[str, Any]:
    verdict = {"jump": {"target": chain_name(tap_name)}}
    return {"element": _where(name=MAP, elem=[[tap_name, verdict]])}


def plug_commands(tap_name: str, mac: str, addresses: Iterable[str]) -> list[dict[str, Any]]:
    """One transaction: the port's chain replaced by :func:`port_rules`, and its map entry."""
    chain = _where(name=chain_name(tap_name))
    commands = _skeleton()
    commands += [{"add": {"chain": chain}}, {"flush": {"chain": chain}}]
    commands += [
        {"add": {"rule": {**_where(chain=chain_name(tap_name)), "expr": rule}}}
        for rule in port_rules(mac, addresses)
    ]
    commands.append({"add": _element(tap_name)})
    return commands


def unplug_commands(tap_name: str) -> list[dict[str, Any]]:
    """One transaction: the port's map entry and chain removed (idempotent).

    NOTE: nftables refuses to delete what does not exist, so each thing is
    added first in the same transaction: the deletions always find it.
    """
    chain = _where(name=chain_name(tap_name))
    return [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"map": _where(name=MAP, type="ifname", map="verdict")}},
        {"add": {"chain": chain}},
        {"add": _element(tap_name)},
        {"delete": _element(tap_name)},
        {"flush": {"chain": chain}},
        {"delete": {"chain": chain}},
    ]


# --- the kernel ----------------------------------------------------------------------


class PortFilter:
    """The anti-spoofing table of one network namespace (None: the agent's own).

    :raises NftablesError: from every method, when nftables refuses or is missing.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._lock = threading.RLock()  # unplug's look at what is left, then its delete

    def _run(self, commands: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        try:
            import nftables  # Debian's python3-nftables (libnftables through ctypes)
        except ImportError as exc:
            raise exception.NftablesError(
                operation=what, reason="the nftables Python module is missing (python3-nftables)"
            ) from exc

        def run() -> tuple[int, Any, str]:
            # NOTE: a context per call, made in the namespace's thread: its
            # netlink socket is opened there, so the rules land in that namespace.
            nft = nftables.Nftables()
            nft.set_json_output(True)
            return nft.json_cmd({"nftables": commands})  # type: ignore[no-any-return]

        with self._lock:
            try:
                rc, output, error = tap.in_netns(self.netns, run)
            except OSError as exc:
                raise exception.NftablesError(operation=what, reason=str(exc)) from exc
        if rc != 0:
            reason = " ".join(str(error).split()) or f"rc={rc}"
            raise exception.NftablesError(operation=what, reason=reason)
        return list((output or {}).get("nftables", []))

    def plug(self, tap_name: str, mac: str, addresses: Iterable[str]) -> None:
        """Put (or replace) the rules of ``tap_name``; one transaction."""
        self._run(plug_commands(tap_name, mac, addresses), f"plug {tap_name}")

    def unplug(self, tap_name: str) -> None:
        """Remove the rules of ``tap_name``; the table too when it was the last port."""
        with self._lock:
            self._run(unplug_commands(tap_name), f"unplug {tap_name}")
            if not self.ports():
                table = {"table": {"family": FAMILY, "name": TABLE}}
                # NOTE: added first: the delete always finds it (idempotent)
                self._run([{"add": table}, {"delete": table}], "remove table")

    def exists(self) -> bool:
        """Whether the table is there."""
        listing = self._run([{"list": {"tables": {"family": FAMILY}}}], "list tables")
        return any(item.get("table", {}).get("name") == TABLE for item in listing)

    def ports(self) -> set[str]:
        """The taps that have rules (the map's keys); empty without the table."""
        if not self.exists():
            return set()
        listing = self._run([{"list": {"map": _where(name=MAP)}}], "list ports")
        for item in listing:
            if "map" in item:
                return {entry[0] for entry in item["map"].get("elem", [])}
        return set()

    def rules(self, tap_name: str) -> list[Rule]:
        """The expressions of ``tap_name``'s rules as the kernel has them (tests, debugging)."""
        listing = self._run(
            [{"list": {"chain": _where(name=chain_name(tap_name))}}], f"list {tap_name}"
        )
        return [item["rule"]["expr"] for item in listing if "rule" in item]
