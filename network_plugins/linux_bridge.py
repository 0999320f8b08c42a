"""The ``linux_bridge`` network plugin: one Linux bridge per network, kernel VXLAN for tunnels.

Per network on a host (names are derived from the network, so every host
and every restart agrees on them):

* a bridge ``brq<first 11 characters of the network id>``;
* flat: the physical interface of the network's physical network, as a port;
* vlan: a ``<interface>.<vid>`` VLAN device on that interface, as a port;
* vxlan: a kernel VXLAN device ``vxlan-<vni>`` (``local_ip``, ``vxlan_udp_port``,
  learning off) as a port; the remote hosts are all-zero flood entries of its
  FDB, kept equal to what :meth:`update_topology` was last told.

libvirt creates each guest's tap and adds it to the bridge itself
(``<interface type='bridge'>``), under the name the plugin gives it in
``<target dev=>`` (``tap`` + 11 characters of the port id, as the ``ovs``
plugin's); :meth:`plug` makes sure the network exists here, puts the port's
anti-spoofing rules in (:mod:`network_plugins.nft_ports`, keyed on that
name, so they are there before the tap is) and remembers the port;
:meth:`unplug` takes the rules out; when the last port of a network on this
host is unplugged, its bridge and VLAN/VXLAN device are removed. All other
kernel work goes through :mod:`network_plugins.netlink` (pyroute2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import threading
from collections.abc import Iterator

from oslo_config import cfg

from compute_driver import domain_xml as lvxml
from compute_driver import exception as cd_exception
from compute_driver.domain_xml.checks import check_mac
from network_plugins import base, netlink, nft_ports, segments
from network_plugins import exception as np_exception
from network_plugins.tap import tap_name

LOG = logging.getLogger(__name__)

GROUP = cfg.OptGroup(
    "linux_bridge",
    title="linux_bridge network plugin",
    help="One Linux bridge per tenant network; VLAN devices for vlan networks, "
    "kernel VXLAN devices (static FDB, no learning) for vxlan networks.",
)

OPTS = [
    cfg.ListOpt(
        "physical_interface_mappings",
        default=[],
        help="Physical networks this host reaches, as <physical_network>:<interface> pairs "
        "(e.g. 'physnet1:eth1'). flat networks put the interface itself into their bridge "
        "(so one flat network per interface, and the interface's own addresses stop "
        "working); vlan networks use an <interface>.<vid> VLAN device. "
        "Related options: local_ip (vxlan networks).",
    ),
    cfg.IPOpt(
        "local_ip",
        help="This host's VXLAN tunnel endpoint (VTEP) address: an address configured on "
        "this host (in 'netns' when that is set) that the other hosts reach. Required "
        "for vxlan networks. Related options: vxlan_udp_port, underlay_mtu.",
    ),
    cfg.PortOpt(
        "vxlan_udp_port",
        default=4789,
        min=1,
        help="UDP destination port of VXLAN packets (1-65535; IANA: 4789). Every host of a "
        "network must use the same port. Related options: local_ip.",
    ),
    cfg.IntOpt(
        "underlay_mtu",
        default=1500,
        min=576,
        max=65535,
        help="MTU of the path between the hosts' VTEPs (576-65535). A vxlan network's MTU is "
        "this minus the encapsulation (50 bytes over IPv4, 70 over IPv6), or the network's "
        "own MTU when that is smaller. Related options: local_ip.",
    ),
    cfg.StrOpt(
        "netns",
        help="Name of a network namespace (under /run/netns) to do all the work in instead "
        "of the agent's own. Unset: the host's namespace. For tests that simulate several "
        "hosts on one machine: libvirt creates a guest's tap in its own namespace, so "
        "that host's libvirtd must run in this namespace too, and the agent, which "
        "checks the taps under /sys/class/net, must see this namespace's /sys.",
    ),
]

NETWORK_TYPES = ("flat", "vlan", "vxlan")
BRIDGE_PREFIX = "brq"
BRIDGE_ID_CHARS = 11  # as Neutron's linuxbridge agent: 'brq' + 11 = 14 characters
VXLAN_PREFIX = "vxlan-"
VXLAN_OVERHEAD = {4: 50, 6: 70}  # outer IP + UDP + VXLAN + inner Ethernet


def list_opts() -> dict:
    return {GROUP: OPTS}


# --- names -------------------------------------------------------------------


def bridge_name(network_id: str) -> str:
    """``brq`` + the first 11 characters of the network id (14 characters at most)."""
    name = BRIDGE_PREFIX + network_id[:BRIDGE_ID_CHARS]
    if not network_id or netlink.check_ifname(name):
        raise cd_exception.Invalid(
            reason=f"network id {network_id!r} cannot name a bridge "
            "(it must start with 1-11 characters other than '/', ':' and spaces)"
        )
    return name


def vxlan_name(vni: int) -> str:
    return f"{VXLAN_PREFIX}{vni}"


def vlan_name(interface: str, vid: int) -> str:
    """``<interface>.<vid>``; a long interface name is cut and suffixed with a hash of it."""
    return netlink.derived_ifname(interface, f".{vid}")


def parse_mappings(values: list[str]) -> dict[str, str]:
    """``['physnet1:eth1', ...]`` as ``{'physnet1': 'eth1'}``.

    :raises InvalidConfig: a malformed pair, a bad interface name, or a
        physical network or interface named twice.
    """
    return segments.parse_mappings(
        values, f"[{GROUP.name}] physical_interface_mappings", "interface", netlink.check_ifname
    )


# --- the plugin ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """What one network is made of on this host."""

    bridge: str
    uplink: str  # vxlan-<vni>, <interface>.<vid>, or the physical interface (flat)
    mtu: int
    interface: str | None = None  # physical interface (flat, vlan)


class LinuxBridgePlugin(base.NetworkPlugin):
    """Linux bridges, VLAN devices and kernel VXLAN, driven through netlink."""

    name = "linux_bridge"

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        netlink_api: netlink.Netlink | None = None,
        port_filter: nft_ports.PortFilter | None = None,
    ) -> None:
        """:param netlink_api: / :param port_filter: the netlink and nftables helpers to
        use (tests); made on first use otherwise.

        :raises InvalidConfig: a malformed ``physical_interface_mappings``.
        """
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.opts = conf.linux_bridge
        for opt in OPTS:  # a bad value stops the agent at start, not at the first plug
            try:
                getattr(self.opts, opt.dest)
            except (cfg.ConfigFileValueError, ValueError) as exc:
                raise cd_exception.InvalidConfig(
                    reason=f"[{GROUP.name}] {opt.name}: {exc}"
                ) from exc
        self.mappings = parse_mappings(self.opts.physical_interface_mappings)
        self._nl = netlink_api
        self._port_filter = port_filter
        # NOTE: one lock for everything: plug/unplug of ports of one network
        # must not interleave (an unplug could remove the bridge a plug just
        # checked). Netlink calls take microseconds.
        self._lock = threading.RLock()
        self._networks: dict[str, base.Network] = {}  # set up here, by id
        self._ports: dict[str, tuple[str, str]] = {}  # port id -> (network id, instance uuid)
        self._remotes: dict[str, frozenset[str]] = {}  # network id -> remote VTEPs
        self._local_ip_seen = False

    def close(self) -> None:
        """Close the netlink socket (it is reopened on the next call)."""
        with self._lock:
            if self._nl is not None:
                self._nl.close()
                self._nl = None

    def describe(self) -> base.Description:
        return base.Description(
            name=self.name, network_types=tuple(NETWORK_TYPES), anti_spoofing=True, tunnels=True
        )

    def tunnel_endpoint(self) -> str | None:
        """``[linux_bridge] local_ip``, when set."""
        return str(self.opts.local_ip) if self.opts.local_ip else None

    def ensure_network(self, network: base.Network) -> None:
        with self._lock:
            self._ensure(network, "ensure_network", "-")

    def plug(self, port: base.Port, instance_uuid: str) -> None:
        if why := check_mac(port.mac):
            raise cd_exception.Invalid(reason=f"port {port.id}: MAC {port.mac!r} {why}")
        tap = tap_name(port.id)
        try:
            addresses = [str(ipaddress.ip_interface(a).ip) for a in port.addresses]
        except ValueError as exc:
            raise cd_exception.Invalid(reason=f"port {port.id}: {exc}") from exc
        with self._lock:
            known = self._ports.get(port.id)
            if known is not None and known[0] != port.network.id:
                raise cd_exception.NetworkError(
                    operation="plug",
                    port=port.id,
                    reason=f"the port is plugged into network {known[0]} already",
                )
            self._ensure(port.network, "plug", port.id)
            try:
                self._filter().plug(tap, port.mac, addresses)
            except np_exception.NftablesError as exc:
                if not self._ports_of(port.network.id):
                    self._teardown(
                        port.network, self._layout(port.network), "plug", port.id, refuse=False
                    )
                raise cd_exception.NetworkError(
                    operation="plug", port=port.id, reason=str(exc)
                ) from exc
            self._ports[port.id] = (port.network.id, instance_uuid)

    def unplug(self, port: base.Port, instance_uuid: str) -> None:
        with self._lock:
            known = self._ports.get(port.id)
            if known is not None and known[1] != instance_uuid:
                LOG.info(
                    "Not unplugging port %s for %s: it belongs to %s now",
                    port.id,
                    instance_uuid,
                    known[1],
                )
                return
            try:
                self._filter().unplug(tap_name(port.id))
            except np_exception.NftablesError as exc:
                raise cd_exception.NetworkError(
                    operation="unplug", port=port.id, reason=str(exc)
                ) from exc
            self._ports.pop(port.id, None)
            if self._ports_of(port.network.id):
                return
            try:
                layout = self._layout(port.network)
            except cd_exception.ComputeDriverError:
                return  # nothing can have been made for such a network
            self._teardown(port.network, layout, "unplug", port.id, refuse=False)

    def interface_config(self, port: base.Port) -> lvxml.Interface:
        layout = self._layout(port.network)
        return lvxml.Interface(
            type="bridge",
            source_bridge=layout.bridge,
            # NOTE: the name the anti-spoofing rules are keyed on
            target_dev=tap_name(port.id),
            mac=port.mac,
            model="virtio",
            mtu=layout.mtu,
        )

    def update_topology(self, network: base.Network, remote_endpoints: list[str]) -> None:
        layout = self._layout(network)
        if network.type != "vxlan":
            return  # flat and vlan networks have no tunnels
        remotes = segments.remote_endpoints(
            network, remote_endpoints, self._local_ip(), f"[{GROUP.name}] local_ip"
        )
        with self._lock:
            self._remotes[network.id] = remotes
            with self._failure("update_topology", "-", network):
                if self._api().link(layout.uplink) is not None:
                    self._api().set_flood_destinations(layout.uplink, set(remotes))

    def delete_network(self, network: base.Network) -> None:
        with self._lock:
            ports = self._ports_of(network.id)
            if ports:
                raise cd_exception.InUse(
                    what="network",
                    name=network.id,
                    reason="ports %s are plugged on this host" % ", ".join(sorted(ports)),
                )
            try:
                layout = self._layout(network)
            except cd_exception.ComputeDriverError:
                layout = None
            if layout is not None:
                self._teardown(network, layout, "delete_network", "-", refuse=True)
            self._networks.pop(network.id, None)
            self._remotes.pop(network.id, None)

    # --- internals -------------------------------------------------------------

    def _filter(self) -> nft_ports.PortFilter:
        if self._port_filter is None:
            self._port_filter = nft_ports.PortFilter(self.opts.netns)
        return self._port_filter

    def _api(self) -> netlink.Netlink:
        if self._nl is None:
            try:
                self._nl = netlink.Netlink(self.opts.netns)
            except netlink.LinkError as exc:
                raise cd_exception.NetworkError(
                    operation="open netlink", port="-", reason=str(exc)
                ) from exc
        return self._nl

    @contextlib.contextmanager
    def _failure(
        self, operation: str, port: str, network: base.Network, undo: list[str] | None = None
    ) -> Iterator[None]:
        """Turn netlink errors into NetworkError; on any error delete the devices in ``undo``."""
        try:
            yield
        except netlink.LinkError as exc:
            self._undo(undo)
            raise cd_exception.NetworkError(
                operation=operation, port=port, reason=f"network {network.id}: {exc}"
            ) from exc
        except BaseException:
            self._undo(undo)
            raise

    def _undo(self, created: list[str] | None) -> None:
        for name in reversed(created or []):
            try:
                self._api().delete(name)
            except Exception:  # noqa: BLE001 - keep the first error, log this one
                LOG.exception("Could not delete %s while undoing a failed call", name)

    def _ports_of(self, network_id: str) -> list[str]:
        return [port for port, (net, _) in self._ports.items() if net == network_id]

    def _local_ip(self) -> segments.IPAddress:
        return segments.local_ip(self.opts.local_ip, f"[{GROUP.name}] local_ip", "vxlan")

    def _layout(self, network: base.Network) -> Layout:
        """Names and MTU of ``network`` here; validates the network against the options.

        :raises NetworkTypeNotSupported: not flat, vlan or vxlan.
        :raises Invalid: a segment or MTU out of range, an id unfit for a bridge name.
        :raises InvalidConfig: the options cannot carry this network.
        """
        if network.type not in NETWORK_TYPES:
            raise np_exception.NetworkTypeNotSupported(plugin=self.name, network_type=network.type)
        bridge = bridge_name(network.id)
        if network.type == "vxlan":
            vni = segments.segment(network, "VNI", 1, segments.MAX_VNI)
            limit = self.opts.underlay_mtu - VXLAN_OVERHEAD[self._local_ip().version]
            # NOTE: the smaller of the two, not an error: Network.mtu defaults to
            # 1500, which no VXLAN network on a 1500-byte underlay can carry.
            return Layout(bridge, vxlan_name(vni), segments.mtu(network, min(network.mtu, limit)))
        interface = self._interface(network)
        if network.type == "flat":
            return Layout(bridge, interface, segments.mtu(network, network.mtu), interface)
        vid = segments.segment(network, "VLAN id", 1, segments.MAX_VLAN)
        return Layout(
            bridge, vlan_name(interface, vid), segments.mtu(network, network.mtu), interface
        )

    def _interface(self, network: base.Network) -> str:
        return segments.mapped(
            network, self.mappings, f"[{GROUP.name}] physical_interface_mappings"
        )

    def _ensure(self, network: base.Network, operation: str, port: str) -> None:
        layout = self._layout(network)
        known = self._networks.get(network.id)
        if known is not None and segments.shape(known) != segments.shape(network):
            raise cd_exception.NetworkError(
                operation=operation,
                port=port,
                reason=f"network {network.id} is set up here as {segments.shape(known)}, "
                f"not {segments.shape(network)}; delete it first",
            )
        for other in self._networks.values():
            if other.id != network.id and bridge_name(other.id) == layout.bridge:
                raise cd_exception.NetworkError(
                    operation=operation,
                    port=port,
                    reason=f"networks {other.id} and {network.id} would share bridge "
                    f"{layout.bridge} (their ids start alike)",
                )
        api = self._api()
        created: list[str] = []
        with self._failure(operation, port, network, undo=created):
            if network.type == "vxlan" and not self._local_ip_seen:
                self._check_local_ip(api)
            if network.type != "vxlan":
                self._check_interface_mtu(api, layout)
            if api.ensure_bridge(layout.bridge, layout.mtu):
                created.append(layout.bridge)
            if network.type == "flat":
                api.enslave(layout.uplink, layout.bridge)
            elif network.type == "vlan":
                assert layout.interface is not None and network.segment is not None
                if api.ensure_vlan(
                    layout.uplink, layout.interface, network.segment, layout.mtu, layout.bridge
                ):
                    created.append(layout.uplink)
            else:
                assert network.segment is not None
                if api.ensure_vxlan(
                    layout.uplink,
                    network.segment,
                    str(self._local_ip()),
                    self.opts.vxlan_udp_port,
                    layout.mtu,
                    layout.bridge,
                ):
                    created.append(layout.uplink)
                # NOTE: the flood list is written when the device is made or first
                # seen by this process, and by update_topology; not on every plug
                # (one FDB dump per plug would double its cost). None: never told
                # (e.g. since a restart), so whatever is there stays.
                remotes = self._remotes.get(network.id)
                fresh = layout.uplink in created or network.id not in self._networks
                if remotes is not None and fresh:
                    api.set_flood_destinations(layout.uplink, set(remotes))
        self._networks[network.id] = network

    def _check_local_ip(self, api: netlink.Netlink) -> None:
        local = str(self._local_ip())
        if local not in api.addresses():
            where = f"network namespace {self.opts.netns}" if self.opts.netns else "this host"
            raise netlink.LinkError(
                "use",
                f"local_ip {local}",
                f"it is not an address of {where}; set [{GROUP.name}] local_ip to one",
            )
        self._local_ip_seen = True

    def _check_interface_mtu(self, api: netlink.Netlink, layout: Layout) -> None:
        assert layout.interface is not None
        link = api.link(layout.interface)
        if link is None:
            raise netlink.LinkError(
                "use",
                layout.interface,
                f"no such interface (mapped in [{GROUP.name}] physical_interface_mappings)",
            )
        if link.mtu < layout.mtu:
            raise netlink.LinkError(
                "use",
                layout.interface,
                f"its MTU {link.mtu} is smaller than the network's {layout.mtu}",
            )

    def _teardown(
        self, network: base.Network, layout: Layout, operation: str, port: str, refuse: bool
    ) -> None:
        """Remove the bridge and its VLAN/VXLAN device unless something else uses the bridge."""
        api = self._api()
        with self._failure(operation, port, network):
            others = [name for name in api.ports(layout.bridge) if name != layout.uplink]
            if others:
                # NOTE: a port we do not know (a tap of a guest that is still
                # running, e.g. after an agent restart) keeps the bridge:
                # removing it would cut that guest off.
                if refuse:
                    raise cd_exception.InUse(
                        what="bridge",
                        name=layout.bridge,
                        reason="it still has ports " + ", ".join(others),
                    )
                LOG.warning(
                    "Keeping bridge %s of network %s: it still has ports %s",
                    layout.bridge,
                    network.id,
                    ", ".join(others),
                )
                return
            if layout.uplink != layout.interface:  # never delete a physical interface
                api.delete(layout.uplink)
            api.delete(layout.bridge)
        self._networks.pop(network.id, None)
