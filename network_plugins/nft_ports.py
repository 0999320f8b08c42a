"""Anti-spoofing rules for guest taps on Linux bridges: nftables, bridge family, stateless.

One table ``bridge cd-antispoof`` per host (or per ``netns``) with one
chain on the bridge's prerouting hook and fixed rules; what each port may
send is in sets keyed on the tap's name (``ports``, ``macs``, ``v4``,
``v6``, ``na``, ``l2only``), so a plug or an unplug only adds or deletes
set elements (one transaction, constant cost: no chain per port, whose
creation makes libnftables fetch every chain). Frames from every other
bridge port (uplinks, VXLAN devices) are not in ``ports`` and pass. The
same policy as the ``ovs`` plugin's (:func:`ovs_flows.guest_port`):

* only untagged frames from the port's own MAC;
* never a DHCPv4 or DHCPv6 server reply, a router advertisement or a
  redirect (every port, with or without addresses, as Neutron does);
* with addresses: ARP only as itself; IPv4 from its addresses and DHCP
  discovery from 0.0.0.0; IPv6 from its addresses and from its MAC's
  link-local address (IPv4-only ports too), duplicate address detection and
  MLD reports from ``::``; neighbour advertisements only for those
  addresses; nothing else. Without addresses (``l2only``): the MAC check only.

NOTE: stateless on purpose: this kernel has no bridge-family conntrack
(``NF_CONNTRACK_BRIDGE``), and none of these checks needs state. The
protocol matches use ``meta l4proto`` and the transport header offset the
kernel found, so IPv6 extension headers do not hide an ICMPv6 or UDP
header. nftables has no match for the ND options, so (unlike the ``ovs``
plugin) the link-layer address inside a neighbour advertisement is not
checked; the frame's own source MAC is.

Rules are keyed on the tap's *name*, so they are in place before libvirt
creates the tap (the plugin names it in ``<target dev=>``). Every change is
one nftables transaction (atomic) through libnftables (Debian's
python3-nftables binding), never a command line: the fixed table is
written once per :class:`PortFilter` (and again if it went missing), as
constant text; the elements as nftables JSON. A plug replaces the port's
elements (those it had are read back from the kernel on first use, so a
re-plug after an agent restart duplicates and leaves nothing); an unplug
deletes them, and the table with the last port.
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
CHAIN = "prerouting"

Element = tuple[str, tuple[str, ...]]  # (set, key parts)

# NOTE: constant text (no value from a port in it), loaded as one
# transaction; flush-then-add keeps it idempotent. The ``na`` set is typed
# from the expression (``typeof``): nftables 1.0.6 has no name for the
# target address of a neighbour advertisement (RFC 4861 4.4), 8 bytes into
# the ICMPv6 header, and no JSON form for such a set.
RULES = (
    "iifname != @ports accept",
    "iifname . ether saddr != @macs drop",
    "ether type { 8021q, 8021ad } drop",
    "ether type ip udp sport 67 udp dport 68 drop",
    "ether type ip6 udp sport 547 udp dport 546 drop",
    "icmpv6 type { nd-router-advert, nd-redirect } drop",
    "iifname @l2only accept",
    "icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @na drop",
    "iifname . arp saddr ether @macs iifname . arp saddr ip @v4 accept",
    "iifname . ip saddr @v4 accept",
    "ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept",
    "iifname . ip6 saddr @v6 accept",
    "ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld2-listener-report } accept",
    "drop",
)
_WHERE = f"{FAMILY} {TABLE}"
SKELETON = "\n".join(
    [
        f"add table {_WHERE}",
        f"add set {_WHERE} ports {{ type ifname; }}",
        f"add set {_WHERE} l2only {{ type ifname; }}",
        f"add set {_WHERE} macs {{ type ifname . ether_addr; }}",
        f"add set {_WHERE} v4 {{ type ifname . ipv4_addr; }}",
        f"add set {_WHERE} v6 {{ type ifname . ipv6_addr; }}",
        f"add set {_WHERE} na {{ typeof iifname . @th,64,128; }}",
        f"add chain {_WHERE} {CHAIN} {{ type filter hook prerouting priority filter; "
        "policy accept; }",
        f"flush chain {_WHERE} {CHAIN}",
        *(f"add rule {_WHERE} {CHAIN} {rule}" for rule in RULES),
    ]
)
SETS = ("ports", "l2only", "macs", "v4", "v6", "na")


def _target(address: str) -> str:
    """An IPv6 address as the ``na`` set's key: 128 bits in hex."""
    return "0x%032x" % int(ipaddress.IPv6Address(address))


def port_elements(tap_name: str, mac: str, addresses: Iterable[str]) -> set[Element]:
    """What port ``tap_name`` may send, as elements of the table's sets."""
    mac = mac.lower()
    ips = [ipaddress.ip_interface(a).ip for a in addresses]
    elements: set[Element] = {("ports", (tap_name,)), ("macs", (tap_name, mac))}
    if not ips:
        return elements | {("l2only", (tap_name,))}
    v6 = [str(ip) for ip in ips if ip.version == 6] + [link_local(mac)]
    elements |= {("v4", (tap_name, str(ip))) for ip in ips if ip.version == 4}
    elements |= {("v6", (tap_name, ip)) for ip in v6}
    elements |= {("na", (tap_name, _target(ip))) for ip in v6}
    return elements


def _json(element: Element) -> Any:
    _, key = element
    return key[0] if len(key) == 1 else {"concat": list(key)}


def element_commands(verb: str, elements: Iterable[Element]) -> list[dict[str, Any]]:
    """``add`` or ``delete`` commands for ``elements``, one per set."""
    by_set: dict[str, list[Any]] = {}
    for element in sorted(elements):
        by_set.setdefault(element[0], []).append(_json(element))
    return [
        {verb: {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elem}}}
        for name, elem in by_set.items()
    ]


def _parse(name: str, elem: Any) -> Element:
    if isinstance(elem, dict) and "concat" in elem:
        key = tuple(str(part) for part in elem["concat"])
        if name == "na":
            key = (key[0], "0x%032x" % int(key[1], 16))
        return name, key
    return name, (str(elem),)


# --- the kernel ----------------------------------------------------------------------


class PortFilter:
    """The anti-spoofing table of one network namespace (None: the agent's own).

    :raises NftablesError: from every method, when nftables refuses or is missing.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        # NOTE: the elements each tap has in the kernel, read back on first
        # use (None: not yet); every change keeps it in step.
        self._elements: dict[str, set[Element]] | None = None
        self._lock = threading.RLock()

    def _run(self, commands: str | list[dict[str, Any]], what: str) -> dict[str, Any]:
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
            if isinstance(commands, str):
                return nft.cmd(commands)  # type: ignore[no-any-return]
            return nft.json_cmd({"nftables": commands})  # type: ignore[no-any-return]

        try:
            rc, output, error = tap.in_netns(self.netns, run)
        except OSError as exc:
            raise exception.NftablesError(operation=what, reason=str(exc)) from exc
        if rc != 0:
            reason = " ".join(str(error).split()) or f"rc={rc}"
            raise exception.NftablesError(operation=what, reason=reason)
        return output if isinstance(output, dict) else {}

    def _listing(self) -> list[dict[str, Any]]:
        """The table's objects, or [] when there is no table."""
        tables = self._run([{"list": {"tables": {"family": FAMILY}}}], "list tables")
        if not any(i.get("table", {}).get("name") == TABLE for i in tables.get("nftables", [])):
            return []
        listing = self._run([{"list": {"table": {"family": FAMILY, "name": TABLE}}}], "list")
        return list(listing.get("nftables", []))

    def _state(self) -> dict[str, set[Element]]:
        """The elements per tap (read from the kernel the first time), the table made."""
        if self._elements is None:
            known: dict[str, set[Element]] = {}
            for item in self._listing():
                found = item.get("set")
                if found and found.get("name") in SETS:
                    for elem in found.get("elem", []):
                        element = _parse(found["name"], elem)
                        known.setdefault(element[1][0], set()).add(element)
            self._run(SKELETON, "make the table")
            self._elements = known
        return self._elements

    def _change(self, commands: list[dict[str, Any]], what: str) -> None:
        try:
            self._run(commands, what)
        except exception.NftablesError:
            self._elements = None  # read the kernel again next time
            raise

    def plug(self, tap_name: str, mac: str, addresses: Iterable[str]) -> None:
        """``tap_name``'s elements become those of (``mac``, ``addresses``); one transaction."""
        wanted = port_elements(tap_name, mac, addresses)
        with self._lock:
            state = self._state()
            old = state.get(tap_name, set())
            commands = element_commands("delete", old - wanted)
            commands += element_commands("add", wanted - old)
            if commands:
                self._change(commands, f"plug {tap_name}")
            state[tap_name] = wanted

    def unplug(self, tap_name: str) -> None:
        """Remove ``tap_name``'s elements; the table too when it was the last port."""
        with self._lock:
            state = self._state()
            old = state.pop(tap_name, set())
            if state:
                if old:
                    self._change(element_commands("delete", old), f"unplug {tap_name}")
                return
            table = {"table": {"family": FAMILY, "name": TABLE}}
            # NOTE: added first: the delete always finds it (idempotent)
            self._change([{"add": table}, {"delete": table}], "remove the table")
            self._elements = None

    def exists(self) -> bool:
        """Whether the table is there."""
        return bool(self._listing())

    def ports(self) -> set[str]:
        """The taps that have rules (read from the kernel)."""
        for item in self._listing():
            found = item.get("set")
            if found and found.get("name") == "ports":
                return {str(e) for e in found.get("elem", [])}
        return set()

    def elements(self, tap_name: str) -> set[Element]:
        """``tap_name``'s elements as the kernel has them (tests, debugging)."""
        found: set[Element] = set()
        for item in self._listing():
            one = item.get("set")
            if one and one.get("name") in SETS:
                found |= {
                    e for e in (_parse(one["name"], x) for x in one.get("elem", []))
                    if e[1][0] == tap_name
                }  # fmt: skip
        return found
