"""OpenFlow rules of the ``ovs`` plugin, and the ``ovs-ofctl`` calls that install them.

The rules are plain data (:class:`Flow`), built by pure functions, so the
unit tests check them without a switch. Layout (Neutron's OVS agent,
smaller; every bridge but the provider bridges has ``fail_mode=secure``,
so an empty table drops)::

  integration bridge            table 0  CLASSIFY: from patch-tun -> NORMAL (already tagged);
                                         from a provider patch: segment/untagged -> local VLAN,
                                         NORMAL, anything else dropped; the rest -> table 10
                                table 10 INGRESS: per guest port (in_port): its own MAC and, per
                                         address, ARP with that sender IP/MAC, IPv4/IPv6 from that
                                         source, DHCP discovery -> NORMAL; default drop
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

NOTE: rules go in through ``ovs-ofctl --bundle add-flows BRIDGE -`` (one
process, list arguments, no shell): ovsdbapp has no OpenFlow API, and a
bundle makes each logical change on a bridge one atomic commit (the
delete lines and the add lines of a change land together or not at all).
A change that touches several bridges is one bundle per bridge.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import subprocess
from collections.abc import Iterable

COOKIE_BASE = 0xCD << 56
COOKIE_OURS_MASK = 0xFF << 56
KIND_BASE = 1  # the fixed rules of a bridge
KIND_NETWORK = 2  # id: the network's local VLAN
KIND_PORT = 3  # id: the guest port's OpenFlow port number
KIND_CANARY = 4

# integration bridge
CLASSIFY = 0
INGRESS = 10
CANARY = 23
# tunnel bridge
INBOUND = 4
OUTBOUND = 20

NORMAL = "NORMAL"
OPENFLOW_VERSION = "OpenFlow13"


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
    ]
    # NOTE: a provider patch's traffic is only taken when a network's rule
    # (priority 100) translates its segment; the rest must not reach table 10.
    flows += [Flow(CLASSIFY, 50, f"in_port={ofport}", "drop", c) for ofport in provider_patches]
    return flows


def _link_local(mac: str) -> str:
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui)))


def guest_port(ofport: int, mac: str, addresses: Iterable[str]) -> list[Flow]:
    """Anti-spoofing: what port ``ofport`` may send, all to NORMAL; the rest is dropped.

    A port without addresses is checked on its MAC only (an L2-only network
    has no IPAM to check against).
    """
    c = cookie(KIND_PORT, ofport)
    own = f"in_port={ofport},dl_src={mac}"
    ips = [ipaddress.ip_interface(a).ip for a in addresses]
    if not ips:
        return [Flow(INGRESS, 90, own, NORMAL, c)]
    flows = []
    v4 = [ip for ip in ips if ip.version == 4]
    v6 = [ip for ip in ips if ip.version == 6]
    for ip in v4:
        flows.append(Flow(INGRESS, 100, f"{own},arp,arp_sha={mac},arp_spa={ip}", NORMAL, c))
        flows.append(Flow(INGRESS, 100, f"{own},ip,nw_src={ip}", NORMAL, c))
    if v4:  # DHCP discovery, before the guest has its address
        flows.append(Flow(INGRESS, 100, f"{own},udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67", NORMAL, c))
    if v6:
        for ip6 in [*v6, ipaddress.IPv6Address(_link_local(mac))]:
            flows.append(Flow(INGRESS, 100, f"{own},ipv6,ipv6_src={ip6}", NORMAL, c))
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


# --- ovs-ofctl -----------------------------------------------------------------------


class OfCtlError(Exception):
    """An ``ovs-ofctl`` call failed."""


class OfCtl:
    """``ovs-ofctl`` against ``<run_dir>/<bridge>.mgmt`` (ovs-vswitchd's per-bridge socket)."""

    def __init__(self, run_dir: str, timeout: int, binary: str = "ovs-ofctl") -> None:
        self.run_dir = run_dir
        self.timeout = timeout
        self.binary = binary

    def target(self, bridge: str) -> str:
        return f"unix:{self.run_dir}/{bridge}.mgmt"

    def _run(
        self, bridge: str, command: str, *rest: str, bundle: bool = False, stdin: str | None = None
    ) -> str:
        argv = [self.binary, "-O", OPENFLOW_VERSION, f"--timeout={self.timeout}"]
        if bundle:
            argv.append("--bundle")
        argv += [command, self.target(bridge), *rest]
        try:
            result = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout + 5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OfCtlError(f"ovs-ofctl {command} on bridge {bridge}: {exc}") from exc
        if result.returncode != 0:
            raise OfCtlError(f"ovs-ofctl {command} on bridge {bridge}: {result.stderr.strip()}")
        return result.stdout

    def apply(self, bridge: str, delete: Iterable[Deletion] = (), add: Iterable[Flow] = ()) -> None:
        """Delete then add, as one bundle (one atomic commit on ``bridge``)."""
        lines = [f"delete {d.text()}" for d in delete] + [f"add {f.text()}" for f in add]
        if lines:
            self._run(bridge, "add-flows", "-", bundle=True, stdin="\n".join(lines) + "\n")

    def replace(self, bridge: str, flows: Iterable[Flow]) -> None:
        """Make ``flows`` the only rules of ``bridge``, as one bundle."""
        text = "".join(f.text() + "\n" for f in flows)
        self._run(bridge, "replace-flows", "-", bundle=True, stdin=text)

    def has(self, bridge: str, table: int, flow_cookie: int) -> bool:
        out = self._run(bridge, "dump-flows", f"table={table},cookie={flow_cookie:#x}/-1")
        return f"cookie={flow_cookie:#x}" in out

    def dump(self, bridge: str) -> str:
        return self._run(bridge, "dump-flows", "--no-stats")
