"""Checks every plugin makes of a network and of its own options.

Both the Linux bridge and the OVS plugin validate segments, MTUs, physical
network mappings and tunnel endpoints the same way, with the same words,
and derive a port's IPv6 link-local address the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from compute_driver import exception
from network_plugins.base import Network

MAX_VNI = 2**24 - 1
MAX_VLAN = 4094
MIN_MTU = 68

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def segment(network: Network, what: str, low: int, high: int) -> int:
    """The network's segment (VNI, VLAN ID), which must be an integer in ``low..high``.

    :raises Invalid: missing or out of range.
    """
    value = network.segment
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise exception.Invalid(
            reason=f"{network.type} network {network.id} needs a segment ({what}) "
            f"in {low}..{high}, not {value!r}"
        )
    return value


def mtu(network: Network, value: int) -> int:
    """``value`` if it is a usable MTU for ``network``.

    :raises Invalid: below the minimum.
    """
    if value < MIN_MTU:
        raise exception.Invalid(
            reason=f"network {network.id} would get MTU {value}, below the minimum {MIN_MTU}"
        )
    return value


def shape(network: Network) -> str:
    """What a network is on the wire, in words (type, segment, physnet)."""
    text = f"{network.type} network"
    if network.segment is not None:
        text += f" segment {network.segment}"
    if network.physical_network is not None:
        text += f" on {network.physical_network}"
    return text


def parse_mappings(
    values: list[str],
    option: str,
    target: str,
    check_target: Callable[[str], str | None] | None = None,
) -> dict[str, str]:
    """``['physnet1:eth1', ...]`` as ``{'physnet1': 'eth1'}``.

    :param option: the option, for errors (``[ovs] bridge_mappings``).
    :param target: what a pair maps to (``interface``, ``bridge``).
    :param check_target: why a target is unusable, or None.
    :raises InvalidConfig: a malformed pair, an unusable target, or a
        physical network or target named twice.
    """
    mappings: dict[str, str] = {}
    for value in values:
        physnet, sep, mapped = (part.strip() for part in value.partition(":"))
        why = None
        if not sep or not physnet or (not mapped and check_target is None):
            why = f"is not <physical_network>:<{target}>"
        elif check_target is not None and (reason := check_target(mapped)):
            why = f"names no usable {target}: {reason}"
        elif physnet in mappings:
            why = f"maps physical network {physnet!r} a second time"
        elif mapped in mappings.values():
            why = f"maps {target} {mapped!r} a second time"
        if why:
            raise exception.InvalidConfig(reason=f"{option}: {value!r} {why}")
        mappings[physnet] = mapped
    return mappings


def mapped(network: Network, mappings: dict[str, str], option: str) -> str:
    """What the network's physical network maps to (the only one when it names none).

    :raises InvalidConfig: no mapping, or several when the network names none.
    """
    physnet = network.physical_network
    if physnet is None:
        if len(mappings) != 1:
            raise exception.InvalidConfig(
                reason=f"{network.type} network {network.id} names no physical network and "
                f"{option} has {len(mappings)} entries, not exactly one"
            )
        return next(iter(mappings.values()))
    if physnet not in mappings:
        raise exception.InvalidConfig(
            reason=f"physical network {physnet!r} of network {network.id} is not in "
            f"{option} ({', '.join(sorted(mappings)) or 'empty'})"
        )
    return mappings[physnet]


def local_ip(value: str | None, option: str, types: str) -> IPAddress:
    """This host's tunnel endpoint from its option.

    :param types: the network types that need it, for the error.
    :raises InvalidConfig: the option is not set.
    """
    if not value:
        raise exception.InvalidConfig(
            reason=f"{option} is not set: {types} networks need this host's tunnel endpoint address"
        )
    return ipaddress.ip_address(value)


def remote_endpoints(
    network: Network, endpoints: Iterable[str], local: IPAddress, local_option: str
) -> frozenset[str]:
    """The tunnel endpoints of the other hosts: checked, this host's own left out.

    :param local_option: the option naming ``local`` (``[ovs] local_ip``), for errors.
    :raises Invalid: an endpoint that is not an IP address, or of the other IP version.
    """
    remotes = set()
    for endpoint in endpoints:
        try:
            address = ipaddress.ip_address(endpoint)
        except ValueError:
            raise exception.Invalid(
                reason=f"remote endpoint {endpoint!r} of network {network.id} is not an IP address"
            ) from None
        if address.version != local.version:
            raise exception.Invalid(
                reason=f"remote endpoint {endpoint} of network {network.id} is IPv"
                f"{address.version} but {local_option} {local} is IPv{local.version}"
            )
        if address != local:
            remotes.add(str(address))
    return frozenset(remotes)


def link_local(mac: str) -> str:
    """The IPv6 link-local address a guest derives from ``mac`` (EUI-64, RFC 4291)."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui)))
