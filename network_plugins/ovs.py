"""The ``ovs`` network plugin: Open vSwitch, Neutron's OVS agent layout made smaller.

On each host (names from options, so every host and restart agrees):

* an integration bridge (``br-cd-int``) holding the guests' ports; each network
  set up here gets a *local VLAN* (1-4094, this host only) and its guest
  ports are access ports of it (``Port.tag``);
* a tunnel bridge (``br-cd-tun``) joined by a patch pair named after the two
  bridges (``br-cd-int-tun``/``br-cd-tun-int``); it has one flow-based port per
  tunnel type in use (``br-cd-tun-vx``, ``br-cd-tun-gnv``: ``remote_ip=flow``,
  ``key=flow``), and the VNI and remote
  VTEP are set per rule; a network's tunnel rules exist only while it has
  remote endpoints (:meth:`update_topology`) and a port or
  :meth:`ensure_network` here; a tunnel port goes with the last network of
  its type that has remote endpoints;
* provider bridges from ``bridge_mappings`` (the operator's, holding the
  physical interface), joined by int-<br>/phy-<br> patch pairs, for flat
  and vlan networks.

The OpenFlow rules are in :mod:`network_plugins.ovs_flows`; every OVSDB
write goes through :mod:`network_plugins.ovs_db` (ovsdbapp IDL).

Plugging (NOTE: the choice that makes "plugged before the guest runs, and
through every power cycle" true): the guest's tap and its OVS port are the
plugin's, never libvirt's. :meth:`plug` makes a *persistent* tap (``tap`` +
11 characters of the port id, :mod:`network_plugins.tap`), then the OVS
port of that name with ``external_ids`` ``compute-driver-port-id``, -mac,
-instance-uuid, -network-id and -addresses, the network's local VLAN as tag (``vlan_mode=access``:
never a trunk), ``mtu_request`` and an ``ofport_request`` chosen here, in
one OVSDB transaction that ovs-vswitchd has applied when it returns; then
the port's anti-spoofing rules, keyed on that OpenFlow port number, in one
bundle. :meth:`interface_config` is ``<interface type='ethernet'>`` with
``<target dev=TAP managed='no'/>``: libvirt only attaches QEMU to the tap
when the guest starts and detaches it when it stops, and never touches the
switch. (With ``<virtualport type='openvswitch'>`` libvirt owns the port's
row: every stop deletes it, ``--if-exists del-port``, and every start adds
it back untagged, a trunk of every local VLAN on the integration bridge.)
So a start, reboot, resume or restore finds the port exactly as the plug
left it; the guest's first frame meets its rules, which take only untagged
frames; and a port whose rules are missing sends nothing (table 10 drops).
:meth:`unplug` removes the rules, the port and the tap.
:meth:`check_and_resync` puts back a port or tap that something else
changed or removed (a host reboot removes the taps; OVSDB keeps the rows).

State lives in OVSDB, not in the agent: networks in the integration bridge's
``external_ids`` (``compute-driver-network-<id>``), ports in their interfaces'
``external_ids``. A new plugin instance (agent restart) reads them back and
reinstalls every rule on first use; :meth:`check_and_resync`, called
periodically by the agent, also notices an ovs-vswitchd restart (the
canary rule is gone: flows do not survive it) and reinstalls them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg

from compute_driver import domain_xml as lvxml
from compute_driver import exception as cd_exception
from compute_driver.domain_xml.checks import check_mac
from network_plugins import base, netlink, ovs_db, ovs_flows, segments
from network_plugins import exception as np_exception
from network_plugins.ovs_opts import GROUP, OPTS, list_opts
from network_plugins.tap import tap_name

__all__ = ["GROUP", "OPTS", "OvsNetworkPlugin", "list_opts", "tap_name"]

LOG = logging.getLogger(__name__)

NETWORK_TYPES = ("flat", "vlan", "vxlan", "geneve")
TUNNEL_TYPES = ("vxlan", "geneve")
OVERHEAD = {"vxlan": 50, "geneve": 58}
TUNNEL_SUFFIX = {"vxlan": "-vx", "geneve": "-gnv"}
# NOTE: fixed OpenFlow port numbers (ofport_request) for our own ports, so
# that rules written before ovs-vswitchd answers, or after it restarts, are right.
OFPORT_PATCH = 1
OFPORT_TUNNEL = {"vxlan": 2, "geneve": 3}
OFPORT_PROVIDER_FIRST = 10
OFPORT_GUEST_FIRST = 100
OFPORT_MAX = 0xFEFF
# NOTE: 1.4 for the bundles of network_plugins.openflow; 1.0 and 1.3 for
# operators' ovs-ofctl (1.0 is its default).
OPENFLOW_VERSIONS = ["OpenFlow10", "OpenFlow13", "OpenFlow14"]
# NOTE: keys of our own, never Neutron's (iface-id, attached-mac, vm-uuid,
# iface-status): a Neutron OVS agent or ovn-controller on the same host
# claims any port with an iface-id (docs/beside-neutron.md).
KEY_PREFIX = "compute-driver-"
NETWORK_KEY = KEY_PREFIX + "network-"  # Bridge: one per network set up here
IFACE_PORT = KEY_PREFIX + "port-id"
IFACE_MAC = KEY_PREFIX + "mac"
IFACE_INSTANCE = KEY_PREFIX + "instance-uuid"
IFACE_NETWORK = KEY_PREFIX + "network-id"
IFACE_ADDRESSES = KEY_PREFIX + "addresses"
# What versions before issue 17 wrote; moved to the names above at start.
LEGACY_INTEGRATION_BRIDGE = "br-int"
LEGACY_NETWORK_KEY = "cd-network-"
LEGACY_IFACE_KEYS: dict[str, str | None] = {
    "iface-id": IFACE_PORT,
    "attached-mac": IFACE_MAC,
    "vm-uuid": IFACE_INSTANCE,
    "cd-network-id": IFACE_NETWORK,
    "cd-addresses": IFACE_ADDRESSES,
    "iface-status": None,
}
LEGACY_PATCH_INT_SIDE = "patch-tun"  # on the integration bridge
LEGACY_PATCH_TUN_SIDE = "patch-int"  # on the tunnel bridge
LEGACY_TUNNEL_PORTS = ("cd-vxlan", "cd-geneve")


def tap_mac(mac: str) -> str:
    """The tap's own MAC: the guest's with ``fe`` first, as libvirt gives its taps."""
    return "fe" + mac.lower()[2:]


def tunnel_patch_names(int_br: str, tun_br: str) -> tuple[str, str]:
    """(integration side, tunnel side) of the patch pair between the two bridges.

    NOTE: named after the bridges they sit on, not fixed (Neutron's are
    patch-tun/patch-int): two instances on one OVS, or this beside Neutron,
    never share a name as long as their bridges differ.
    """
    return netlink.derived_ifname(int_br, "-tun"), netlink.derived_ifname(tun_br, "-int")


def tunnel_port_name(tun_br: str, kind: str) -> str:
    """The flow-based ``kind`` (vxlan, geneve) tunnel port of tunnel bridge ``tun_br``."""
    return netlink.derived_ifname(tun_br, TUNNEL_SUFFIX[kind])


def patch_names(bridge: str) -> tuple[str, str]:
    """(integration side, provider side) of the patch pair to provider ``bridge``."""
    return ("int-" + bridge)[:15], ("phy-" + bridge)[:15]


def parse_mappings(values: list[str]) -> dict[str, str]:
    """``['physnet1:br-eth1']`` as ``{'physnet1': 'br-eth1'}``.

    :raises InvalidConfig: a malformed pair, or a network or bridge named twice.
    """
    return segments.parse_mappings(values, f"[{GROUP.name}] bridge_mappings", "bridge")


@dataclasses.dataclass
class NetState:
    """A network set up on this host."""

    network: base.Network
    vlan: int
    remotes: frozenset[str] = frozenset()

    def record(self) -> str:
        n = self.network
        return json.dumps(
            {
                "type": n.type,
                "segment": n.segment,
                "physnet": n.physical_network,
                "mtu": n.mtu,
                "name": n.name,
                "vlan": self.vlan,
                "remotes": sorted(self.remotes),
            },
            sort_keys=True,
        )

    @classmethod
    def from_record(cls, network_id: str, text: str) -> NetState:
        d = json.loads(text)
        network = base.Network(
            id=network_id,
            name=d.get("name", network_id),
            type=d["type"],
            segment=d.get("segment"),
            mtu=d.get("mtu", 1500),
            physical_network=d.get("physnet"),
        )
        return cls(network, int(d["vlan"]), frozenset(d.get("remotes", ())))


@dataclasses.dataclass
class PortState:
    network_id: str
    instance_uuid: str
    mac: str
    addresses: tuple[str, ...]
    ofport: int  # the number requested, or the one ovs-vswitchd gave (see check_and_resync)

    @property
    def flows(self) -> list[ovs_flows.Flow]:
        return ovs_flows.guest_port(self.ofport, self.mac, self.addresses)


class OvsNetworkPlugin(base.NetworkPlugin):
    """Open vSwitch bridges and rules, through ovsdbapp (OVSDB) and OpenFlow bundles."""

    name = "ovs"

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        ovsdb: ovs_db.OvsDb | None = None,
        openflow: ovs_flows.OpenFlowBridges | None = None,
        netlink_api: netlink.Netlink | None = None,
    ) -> None:
        """:param ovsdb: / :param openflow: / :param netlink_api: helpers to use
        (tests); made from the options otherwise (netlink on first use).

        :raises InvalidConfig: a malformed option.
        """
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.opts = conf.ovs
        for opt in OPTS:  # a bad value stops the agent at start, not at the first plug
            try:
                getattr(self.opts, opt.dest)
            except (cfg.ConfigFileValueError, ValueError) as exc:
                raise cd_exception.InvalidConfig(
                    reason=f"[{GROUP.name}] {opt.name}: {exc}"
                ) from exc
        self.mappings = parse_mappings(self.opts.bridge_mappings)
        self.int_br = self.opts.integration_bridge
        self.tun_br = self.opts.tunnel_bridge
        self._check_bridge_names()
        self.tunnel_patch = tunnel_patch_names(self.int_br, self.tun_br)
        self.db = ovsdb or ovs_db.OvsDb(self.opts.ovsdb_connection, self.opts.ovsdb_timeout)
        self.openflow = openflow or ovs_flows.OpenFlowBridges(
            self.opts.run_dir, self.opts.ovsdb_timeout
        )
        # NOTE: one lock for everything: a plug and an unplug of one network
        # must not interleave (the unplug could tear down what the plug uses).
        self._lock = threading.RLock()
        self._nl = netlink_api
        self._ready = False
        self._networks: dict[str, NetState] = {}
        self._ports: dict[str, PortState] = {}
        self._pending_remotes: dict[str, frozenset[str]] = {}  # networks not set up here yet
        self._provider_patch: dict[str, int] = {}  # provider bridge -> its phy-<br> ofport
        self._foreign_ofports: set[int] = set()  # guest-range numbers of others' ports

    def close(self) -> None:
        self.openflow.close()
        self.db.close()
        with self._lock:
            if self._nl is not None:
                self._nl.close()
                self._nl = None

    def describe(self) -> base.Description:
        return base.Description(
            name=self.name,
            network_types=tuple(NETWORK_TYPES),
            anti_spoofing=True,
            tunnels=True,
            resync=True,
        )

    def tunnel_endpoint(self) -> str | None:
        """``[ovs] local_ip``, when set."""
        return str(self.opts.local_ip) if self.opts.local_ip else None

    # --- the interface --------------------------------------------------------------

    def ensure_network(self, network: base.Network) -> None:
        self._mtu(network)
        with self._lock, self._failure("ensure_network", "-", network):
            self._start()
            self._ensure(network, "ensure_network", "-")

    def plug(self, port: base.Port, instance_uuid: str) -> None:
        if why := check_mac(port.mac):
            raise cd_exception.Invalid(reason=f"port {port.id}: MAC {port.mac!r} {why}")
        tap_name(port.id)  # validates the id
        mtu = self._mtu(port.network)
        addresses = tuple(str(ipaddress.ip_interface(a).ip) for a in port.addresses)
        with self._lock:
            known = self._ports.get(port.id)
            if known is not None and known.network_id != port.network.id:
                raise cd_exception.NetworkError(
                    operation="plug",
                    port=port.id,
                    reason=f"the port is plugged into network {known.network_id} already",
                )
            with self._failure("plug", port.id, port.network):
                self._start()
                new_network = port.network.id not in self._networks
                state = self._ensure(port.network, "plug", port.id)
            ofport = known.ofport if known is not None else self._free_ofport()
            entry = PortState(port.network.id, instance_uuid, port.mac.lower(), addresses, ofport)
            self._wire(port, entry, state, mtu, port.network.id if new_network else None)
            self._ports[port.id] = entry

    def _wire(
        self,
        port: base.Port,
        entry: PortState,
        state: NetState,
        mtu: int,
        new_network: str | None = None,
    ) -> None:
        """The tap, the OVS port and its rules, as :meth:`plug` describes; on failure,
        what this call made is removed again."""
        tap = tap_name(port.id)
        row_made = self.db.interface(tap) is None
        tap_made = False
        try:
            with self._failure("plug", port.id, port.network):
                tap_made = self._taps().ensure_tap(tap, tap_mac(entry.mac), mtu)
                if tap_made and not row_made:
                    # NOTE: the row outlived its device (a host reboot, or
                    # someone deleted the tap). The userspace datapath keeps
                    # a vanished device's socket and never reads the new
                    # device of that name: the row goes first (a tap on no
                    # bridge carries nothing), then it is made afresh.
                    with self.db.transaction() as txn:
                        txn.add(self.db.api.del_port(tap, bridge=self.int_br, if_exists=True))
                    row_made = True
                with self.db.transaction() as txn:
                    txn.add(self._plug_command(tap, port, entry, state, mtu))
                self.openflow.apply(
                    self.int_br,
                    delete=[
                        ovs_flows.Deletion(ovs_flows.cookie(ovs_flows.KIND_PORT, entry.ofport))
                    ],
                    add=entry.flows,
                )
        except BaseException:
            self._undo_plug(tap, row_made, tap_made, new_network)
            raise

    def unplug(self, port: base.Port, instance_uuid: str) -> None:
        tap = tap_name(port.id)
        with self._lock, self._failure("unplug", port.id, port.network):
            self._start()
            known = self._ports.get(port.id)
            if known is not None and known.instance_uuid != instance_uuid:
                LOG.info(
                    "Not unplugging port %s for %s: it belongs to %s now",
                    port.id,
                    instance_uuid,
                    known.instance_uuid,
                )
                return
            if known is not None:
                self.openflow.apply(
                    self.int_br,
                    delete=[
                        ovs_flows.Deletion(ovs_flows.cookie(ovs_flows.KIND_PORT, known.ofport))
                    ],
                )
            with self.db.transaction() as txn:
                txn.add(self.db.api.del_port(tap, bridge=self.int_br, if_exists=True))
            self._taps().delete(tap)
            self._ports.pop(port.id, None)
            network_id = known.network_id if known is not None else port.network.id
            if network_id in self._networks and not self._ports_of(network_id):
                self._teardown(self._networks[network_id])

    def interface_config(self, port: base.Port) -> lvxml.Interface:
        netdev = self.opts.datapath_type == "netdev"
        # NOTE: type 'ethernet' on the plugin's own tap (managed='no'), not
        # type 'bridge' with <virtualport type='openvswitch'>: see the module
        # docstring (libvirt would own, delete and re-add the port's row).
        return lvxml.Interface(
            type="ethernet",
            mac=port.mac,
            target_dev=tap_name(port.id),
            target_managed="no",
            model="virtio",
            mtu=self._mtu(port.network),
            # NOTE: the userspace datapath passes partial checksums on (recipe gotcha 1).
            host_csum=False if netdev else None,
        )

    def update_topology(self, network: base.Network, remote_endpoints: list[str]) -> None:
        self._mtu(network)  # validates the network
        if network.type not in TUNNEL_TYPES:
            return  # flat and vlan networks have no tunnels
        remotes = self._remotes(network, remote_endpoints)
        with self._lock, self._failure("update_topology", "-", network):
            self._start()
            state = self._networks.get(network.id)
            if state is None:
                self._pending_remotes[network.id] = remotes
                return
            if state.remotes == remotes:
                return
            old = state.remotes
            state.remotes = remotes
            try:
                with self.db.transaction() as txn:
                    self._record_network(txn, state)
                    self._converge_tunnel_ports(txn)
            except BaseException:
                state.remotes = old
                raise
            self._apply_tunnel_rules(state)

    def delete_network(self, network: base.Network) -> None:
        with self._lock, self._failure("delete_network", "-", network):
            self._start()
            ports = self._ports_of(network.id)
            if ports:
                raise cd_exception.InUse(
                    what="network",
                    name=network.id,
                    reason="ports %s are plugged on this host" % ", ".join(sorted(ports)),
                )
            self._pending_remotes.pop(network.id, None)
            state = self._networks.get(network.id)
            if state is not None:
                self._teardown(state)

    def check_and_resync(self) -> bool:
        """Reinstall what the switch lost; returns whether anything was.

        Call periodically (the agent's periodic task). Notices: this
        instance's first use (agent restart), an ovs-vswitchd restart (the
        canary rule on the integration bridge is gone), guest ports that
        ovs-vswitchd numbered otherwise than requested, and guest ports
        whose tap or row something else removed or changed (their tag, VLAN
        mode, keys or requested number); reinstalls all rules in the first
        two cases, that port's rules in the third, and plugs the port again
        in the fourth.

        :raises NetworkError: OVSDB or ovs-vswitchd cannot be reached.
        """
        with self._lock, self._failure("resync", "-", None):
            if not self._ready:
                self._start()
                return True
            canary = ovs_flows.cookie(ovs_flows.KIND_CANARY)
            if not self.openflow.has(self.int_br, ovs_flows.CANARY, canary):
                LOG.warning("ovs-vswitchd lost its flows (restarted?); reinstalling them")
                self._setup_bridges()
                self._repair_ports()
                self._resync_flows()
                return True
            repaired = self._repair_ports()
            return self._resync_moved_ports() or repaired

    # --- internals ----------------------------------------------------------------

    @contextlib.contextmanager
    def _failure(self, operation: str, port: str, network: base.Network | None) -> Iterator[None]:
        try:
            yield
        except (ovs_db.OvsDbError, np_exception.OpenFlowError, netlink.LinkError) as exc:
            where = f"network {network.id}: " if network is not None else ""
            raise cd_exception.NetworkError(
                operation=operation, port=port, reason=f"{where}{exc}"
            ) from exc

    def _ports_of(self, network_id: str) -> list[str]:
        return [pid for pid, p in self._ports.items() if p.network_id == network_id]

    def _local_ip(self) -> segments.IPAddress:
        return segments.local_ip(self.opts.local_ip, f"[{GROUP.name}] local_ip", "vxlan and geneve")

    def _mtu(self, network: base.Network) -> int:
        """The guests' MTU on ``network``; validates the network against the options.

        :raises NetworkTypeNotSupported: not flat, vlan, vxlan or geneve.
        :raises Invalid: a segment or MTU out of range.
        :raises InvalidConfig: the options cannot carry this network.
        """
        if network.type not in NETWORK_TYPES:
            raise np_exception.NetworkTypeNotSupported(plugin=self.name, network_type=network.type)
        if network.type in TUNNEL_TYPES:
            segments.segment(network, "VNI", 1, segments.MAX_VNI)
            extra = 20 if self._local_ip().version == 6 else 0
            mtu = min(network.mtu, self.opts.underlay_mtu - OVERHEAD[network.type] - extra)
        else:
            if network.type == "vlan":
                segments.segment(network, "VLAN id", 1, segments.MAX_VLAN)
            elif network.segment is not None:
                raise cd_exception.Invalid(
                    reason=f"flat network {network.id} has no segment, not {network.segment!r}"
                )
            self._provider_bridge(network)
            mtu = network.mtu
        return segments.mtu(network, mtu)

    def _provider_bridge(self, network: base.Network) -> str:
        return segments.mapped(network, self.mappings, f"[{GROUP.name}] bridge_mappings")

    def _remotes(self, network: base.Network, endpoints: list[str]) -> frozenset[str]:
        return segments.remote_endpoints(
            network, endpoints, self._local_ip(), f"[{GROUP.name}] local_ip"
        )

    # --- start: state from OVSDB, bridges, every rule --------------------------------------

    def _start(self) -> None:
        if self._ready:
            return
        self._migrate()
        self._setup_bridges()
        self._load()
        with self.db.transaction() as txn:  # (after a migration: the renamed tunnel ports)
            self._converge_tunnel_ports(txn)
        # NOTE: ports first, rules second: no rule lets a port send before its
        # row is as the plug made it (tag included).
        self._repair_ports()
        self._resync_flows()
        self._ready = True

    def _check_bridge_names(self) -> None:
        """:raises InvalidConfig: a bridge name Linux refuses, or one bridge named twice."""
        seen: dict[str, str] = {}
        for option, bridge in [
            (f"[{GROUP.name}] integration_bridge", self.int_br),
            (f"[{GROUP.name}] tunnel_bridge", self.tun_br),
            *((f"[{GROUP.name}] bridge_mappings", b) for b in self.mappings.values()),
        ]:
            if why := netlink.check_ifname(bridge):
                raise cd_exception.InvalidConfig(reason=f"{option}: {why}")
            if bridge in seen:
                raise cd_exception.InvalidConfig(
                    reason=f"{option}: bridge {bridge!r} is also {seen[bridge]}"
                )
            seen[bridge] = option

    def _add_bridges(self, txn: Any) -> None:
        api = self.db.api
        for bridge in (self.int_br, self.tun_br):
            txn.add(api.add_br(bridge, may_exist=True, datapath_type=self.opts.datapath_type))
            txn.add(
                api.db_set(
                    "Bridge", bridge, ("fail_mode", "secure"), ("protocols", OPENFLOW_VERSIONS)
                )
            )

    def _legacy_records(self, bridge: str) -> bool:
        """Whether ``bridge`` has networks or ports as a version before issue 17 wrote them."""
        if any(k.startswith(LEGACY_NETWORK_KEY) for k in self.db.bridge_external_ids(bridge)):
            return True
        return any("cd-network-id" in i.external_ids for i in self.db.interfaces(bridge))

    def _migrate(self) -> bool:
        """Move what a version before issue 17 left to today's names; whether it did.

        Its networks and ports are on ``br-int`` (that version's default) or
        on the configured integration bridge, under Neutron's keys; its
        patch pair and tunnel ports have fixed names. In one OVSDB
        transaction: the records and ports move to the configured bridge
        (the same rows, tag and OpenFlow port kept: the guest's tap stays
        attached), the keys are renamed, the old patch and tunnel ports go
        (:meth:`_setup_bridges` and :meth:`_converge_tunnel_ports` make the
        new ones, then every rule is reinstalled). An old bridge that is
        not configured any more is deleted when nothing else is on it, and
        keeps anything that is not ours otherwise.
        """
        candidates = dict.fromkeys([self.int_br, LEGACY_INTEGRATION_BRIDGE])
        legacy = [b for b in candidates if self.db.bridge(b) and self._legacy_records(b)]
        if not legacy:
            return False
        LOG.warning("Moving ports of bridges %s to today's names on %s", legacy, self.int_br)
        with self.db.transaction() as txn:
            self._add_bridges(txn)
        old_bridges: set[str] = set()
        api = self.db.api
        with self.db.transaction() as txn:
            networks = {
                k: v for k, v in self.db.bridge_external_ids(self.int_br).items()
                if not k.startswith(LEGACY_NETWORK_KEY)
            }  # fmt: skip
            for old_int in legacy:
                kept: dict[str, str] = {}
                for key, value in self.db.bridge_external_ids(old_int).items():
                    if key.startswith(LEGACY_NETWORK_KEY):
                        networks[NETWORK_KEY + key[len(LEGACY_NETWORK_KEY) :]] = value
                    else:
                        kept[key] = value
                if old_int != self.int_br:
                    txn.add(ovs_db.ReplaceMapCommand(api, "Bridge", old_int, "external_ids", kept))
                    old_bridges.add(old_int)
                for iface in self.db.interfaces(old_int):
                    ids = dict(iface.external_ids)
                    if "cd-network-id" not in ids or "iface-id" not in ids:
                        continue
                    renamed: dict[str, str] = {}
                    for key, value in ids.items():
                        new_key = LEGACY_IFACE_KEYS.get(key, key)
                        if new_key is not None:  # (iface-status goes)
                            renamed[new_key] = value
                    if old_int != self.int_br:
                        txn.add(ovs_db.MovePortCommand(api, iface.name, old_int, self.int_br))
                    txn.add(
                        ovs_db.ReplaceMapCommand(
                            api, "Interface", iface.name, "external_ids", renamed
                        )
                    )
                txn.add(api.del_port(LEGACY_PATCH_INT_SIDE, bridge=old_int, if_exists=True))
                for provider in self.mappings.values():  # the provider patches come along
                    int_side = patch_names(provider)[0]
                    if old_int != self.int_br and self.db.bridge_of(int_side) == old_int:
                        txn.add(ovs_db.MovePortCommand(api, int_side, old_int, self.int_br))
            # NOTE: the old tunnel bridge is the one patched to an old integration
            # bridge of ours (OVSDB names are unique: that patch-int is ours).
            old_tun = self.db.bridge_of(LEGACY_PATCH_TUN_SIDE)
            if old_tun is not None and self.db.bridge_of(LEGACY_PATCH_INT_SIDE) in legacy:
                txn.add(api.del_port(LEGACY_PATCH_TUN_SIDE, bridge=old_tun, if_exists=True))
                for name in LEGACY_TUNNEL_PORTS:
                    if self.db.bridge_of(name) == old_tun:
                        txn.add(api.del_port(name, bridge=old_tun, if_exists=True))
                if old_tun != self.tun_br:
                    old_bridges.add(old_tun)
            txn.add(ovs_db.ReplaceMapCommand(api, "Bridge", self.int_br, "external_ids", networks))
        self._retire(old_bridges)
        return True

    def _retire(self, bridges: set[str]) -> None:
        """Old bridges of ours: deleted when empty, else only our rules taken off."""
        ours = ovs_flows.Deletion(ovs_flows.COOKIE_BASE, ovs_flows.COOKIE_OURS_MASK)
        for bridge in sorted(bridges):
            row = self.db.bridge(bridge)
            if row is None:
                continue
            others = [p.name for p in row.ports if p.name != bridge]
            if not others:
                with self.db.transaction() as txn:
                    txn.add(self.db.api.del_br(bridge, if_exists=True))
                continue
            LOG.warning("Keeping bridge %s: it has ports %s that are not ours", bridge, others)
            try:
                self.openflow.apply(bridge, delete=[ours])
            except np_exception.OpenFlowError:
                LOG.exception("Could not take our rules off bridge %s", bridge)

    def _setup_bridges(self) -> None:
        """Bridges, patch pairs (idempotent): one transaction."""
        api = self.db.api
        for physnet, bridge in self.mappings.items():
            if self.db.bridge(bridge) is None:
                raise ovs_db.OvsDbError(
                    f"provider bridge {bridge} of physical network {physnet} does not exist "
                    f"([{GROUP.name}] bridge_mappings); create it with its physical interface"
                )
        with self.db.transaction() as txn:
            self._add_bridges(txn)
            for bridge in self.mappings.values():
                # NOTE: the operator's bridge: OpenFlow 1.4 (bundles) added to the
                # versions it allows, never others removed (empty: OVS's defaults,
                # which include 1.4).
                protocols = getattr(self.db.bridge(bridge), "protocols", [])
                if protocols and "OpenFlow14" not in protocols:
                    txn.add(api.db_add("Bridge", bridge, "protocols", "OpenFlow14"))
            int_side, tun_side = self.tunnel_patch
            self._add_patch(txn, self.int_br, int_side, tun_side, OFPORT_PATCH)
            self._add_patch(txn, self.tun_br, tun_side, int_side, OFPORT_PATCH)
            for i, bridge in enumerate(sorted(self.mappings.values())):
                int_side, phy_side = patch_names(bridge)
                self._add_patch(txn, self.int_br, int_side, phy_side, OFPORT_PROVIDER_FIRST + i)
                self._add_patch(txn, bridge, phy_side, int_side, None)
        for bridge in self.mappings.values():
            name = patch_names(bridge)[1]
            ofport = self.db.ofport(name, wait=self.opts.ovsdb_timeout)
            if ofport is None:
                raise ovs_db.OvsDbError(f"ovs-vswitchd gave patch port {name} no OpenFlow port")
            self._provider_patch[bridge] = ofport

    def _add_patch(self, txn: Any, bridge: str, name: str, peer: str, ofport: int | None) -> None:
        api = self.db.api
        txn.add(api.add_port(bridge, name, may_exist=True))
        columns: list[tuple[str, Any]] = [("type", "patch"), ("options", {"peer": peer})]
        if ofport is not None:
            columns.append(("ofport_request", ofport))
        txn.add(api.db_set("Interface", name, *columns))

    def _load(self) -> None:
        """What an earlier instance set up, from OVSDB."""
        for key, value in self.db.bridge_external_ids(self.int_br).items():
            if key.startswith(NETWORK_KEY):
                network_id = key[len(NETWORK_KEY) :]
                try:
                    self._networks[network_id] = NetState.from_record(network_id, value)
                except (ValueError, KeyError, TypeError):
                    LOG.warning("Ignoring unreadable network record %s=%r", key, value)
        for iface in self.db.interfaces(self.int_br):
            ids = iface.external_ids
            network_id = ids.get(IFACE_NETWORK)
            ofport = iface.ofport_request[0] if iface.ofport_request else None
            if not network_id or IFACE_PORT not in ids or network_id not in self._networks:
                self._foreign_ofports.update(iface.ofport_request or ())
                self._foreign_ofports.update(n for n in iface.ofport if n > 0)
                continue
            if ofport is None:
                continue
            addresses = tuple(a for a in ids.get(IFACE_ADDRESSES, "").split(",") if a)
            self._ports[ids[IFACE_PORT]] = PortState(
                network_id, ids.get(IFACE_INSTANCE, ""), ids.get(IFACE_MAC, ""), addresses, ofport
            )
        self._resync_moved_ports(apply=False)

    def _resync_moved_ports(self, apply: bool = True) -> bool:
        """Follow guest ports whose real OpenFlow port differs from the one in their rules."""
        real_ofports = {
            iface.name: ovs_db.ofport_of(iface) for iface in self.db.interfaces(self.int_br)
        }
        moved = False
        for port_id, entry in self._ports.items():
            real = real_ofports.get(tap_name(port_id))
            if real is None or real == entry.ofport:
                continue
            LOG.info(
                "Port %s is OpenFlow port %d, not %d: moving its rules", port_id, real, entry.ofport
            )
            old, entry.ofport = entry.ofport, real
            if apply:
                self.openflow.apply(
                    self.int_br,
                    delete=[ovs_flows.Deletion(ovs_flows.cookie(ovs_flows.KIND_PORT, old))],
                    add=entry.flows,
                )
            moved = True
        return moved

    def _resync_flows(self) -> None:
        """Every rule of every bridge, from the state (one bundle per bridge)."""
        int_flows = ovs_flows.integration_base(
            OFPORT_PATCH,
            [OFPORT_PROVIDER_FIRST + i for i in range(len(self.mappings))],
        )
        tun_flows = ovs_flows.tunnel_base(OFPORT_PATCH, OFPORT_TUNNEL.values())
        provider_flows: dict[str, list[ovs_flows.Flow]] = {
            bridge: ovs_flows.provider_base(ofport)
            for bridge, ofport in self._provider_patch.items()
        }
        for state in self._networks.values():
            int_flows += self._provider_in_rules(state)
            tun_flows += self._tunnel_rules(state)
            for bridge, flows in self._provider_out_rules(state).items():
                provider_flows[bridge] += flows
        for entry in self._ports.values():
            int_flows += entry.flows
        self.openflow.replace(self.int_br, int_flows)
        self.openflow.replace(self.tun_br, tun_flows)
        ours = ovs_flows.Deletion(ovs_flows.COOKIE_BASE, ovs_flows.COOKIE_OURS_MASK)
        for bridge, flows in provider_flows.items():
            # NOTE: the provider bridge is the operator's: only our rules are replaced.
            self.openflow.apply(bridge, delete=[ours], add=flows)

    # --- networks ----------------------------------------------------------------

    def _provider_in_rules(self, state: NetState) -> list[ovs_flows.Flow]:
        network = state.network
        if network.type in TUNNEL_TYPES:
            return []
        index = sorted(self.mappings.values()).index(self._provider_bridge(network))
        return ovs_flows.provider_in(OFPORT_PROVIDER_FIRST + index, state.vlan, network.segment)

    def _provider_out_rules(self, state: NetState) -> dict[str, list[ovs_flows.Flow]]:
        network = state.network
        if network.type in TUNNEL_TYPES:
            return {}
        bridge = self._provider_bridge(network)
        patch = self._provider_patch[bridge]
        return {bridge: ovs_flows.provider_out(patch, state.vlan, network.segment)}

    def _tunnel_rules(self, state: NetState) -> list[ovs_flows.Flow]:
        network = state.network
        if network.type not in TUNNEL_TYPES:
            return []
        assert network.segment is not None
        return ovs_flows.tunnel_network(
            OFPORT_TUNNEL[network.type], OFPORT_PATCH, network.segment, state.vlan, state.remotes
        )

    def _apply_tunnel_rules(self, state: NetState) -> None:
        self.openflow.apply(
            self.tun_br,
            delete=[ovs_flows.Deletion(ovs_flows.cookie(ovs_flows.KIND_NETWORK, state.vlan))],
            add=self._tunnel_rules(state),
        )

    def _record_network(self, txn: Any, state: NetState | None, network_id: str = "") -> None:
        api = self.db.api
        if state is None:
            key = NETWORK_KEY + network_id
            txn.add(api.db_remove("Bridge", self.int_br, "external_ids", key, if_exists=True))
        else:
            key = NETWORK_KEY + state.network.id
            txn.add(api.db_set("Bridge", self.int_br, ("external_ids", {key: state.record()})))

    def _converge_tunnel_ports(self, txn: Any) -> None:
        """A flow-based port per tunnel type some network with remote endpoints uses."""
        api = self.db.api
        wanted = {s.network.type for s in self._networks.values() if s.remotes} & set(TUNNEL_TYPES)
        for kind in TUNNEL_TYPES:
            name = tunnel_port_name(self.tun_br, kind)
            exists = self.db.interface(name) is not None
            if kind in wanted and not exists:
                txn.add(api.add_port(self.tun_br, name, may_exist=True))
                options = {"remote_ip": "flow", "key": "flow", "local_ip": str(self._local_ip())}
                txn.add(
                    api.db_set(
                        "Interface",
                        name,
                        ("type", kind),
                        ("options", options),
                        ("ofport_request", OFPORT_TUNNEL[kind]),
                    )
                )
            elif kind not in wanted and exists:
                txn.add(api.del_port(name, bridge=self.tun_br, if_exists=True))

    def _ensure(self, network: base.Network, operation: str, port: str) -> NetState:
        state = self._networks.get(network.id)
        if state is not None:
            if segments.shape(state.network) != segments.shape(network):
                raise cd_exception.NetworkError(
                    operation=operation,
                    port=port,
                    reason=f"network {network.id} is set up here as "
                    f"{segments.shape(state.network)}, not {segments.shape(network)}; "
                    "delete it first",
                )
            return state
        used = {s.vlan for s in self._networks.values()}
        vlan = next((v for v in range(1, 4095) if v not in used), None)
        if vlan is None:
            raise cd_exception.NetworkError(
                operation=operation, port=port, reason="all 4094 local VLANs are in use"
            )
        state = NetState(network, vlan, self._pending_remotes.pop(network.id, frozenset()))
        self._networks[network.id] = state
        try:
            with self.db.transaction() as txn:
                self._record_network(txn, state)
                self._converge_tunnel_ports(txn)
            self.openflow.apply(self.int_br, add=self._provider_in_rules(state))
            for bridge, flows in self._provider_out_rules(state).items():
                self.openflow.apply(bridge, add=flows)
            self._apply_tunnel_rules(state)
        except BaseException:
            self._teardown(state, quiet=True)
            raise
        return state

    def _teardown(self, state: NetState, quiet: bool = False) -> None:
        """Remove a network's rules, record and (if unused) tunnel port."""
        network = state.network
        delete = [ovs_flows.Deletion(ovs_flows.cookie(ovs_flows.KIND_NETWORK, state.vlan))]
        bridges = [self.int_br, self.tun_br] + list(self._provider_out_rules(state))
        self._networks.pop(network.id, None)
        try:
            for bridge in bridges:
                self.openflow.apply(bridge, delete=delete)
            with self.db.transaction() as txn:
                self._record_network(txn, None, network.id)
                self._converge_tunnel_ports(txn)
        except Exception:
            if not quiet:
                self._networks[network.id] = state
                raise
            LOG.exception("Could not undo network %s while undoing a failed call", network.id)

    # --- ports ----------------------------------------------------------------------

    def _drift(self, port_id: str, entry: PortState, state: NetState) -> str | None:
        """How the tap or row of a plugged port differs from what :meth:`plug` made, or None."""
        tap = tap_name(port_id)
        if not self._taps().exists(tap):
            return "its tap is missing"
        row = self.db.port(tap)
        iface = self.db.interface(tap)
        if row is None or iface is None:
            return "its port is missing"
        if list(row.tag) != [state.vlan] or list(row.vlan_mode) != ["access"] or row.trunks:
            return f"its VLAN is {list(row.tag)} {list(row.vlan_mode)}, not [{state.vlan}] access"
        ids = iface.external_ids
        if ids.get(IFACE_PORT) != port_id or ids.get(IFACE_NETWORK) != entry.network_id:
            return "its external_ids are not ours"
        if list(iface.ofport_request) != [entry.ofport]:
            return f"its ofport_request is {list(iface.ofport_request)}, not {entry.ofport}"
        return None

    def _repair_ports(self) -> bool:
        """Plug again every known port that drifted (:meth:`_drift`); whether any did.

        A port that cannot be repaired is logged and the others are still tried.
        """
        repaired = False
        for port_id, entry in list(self._ports.items()):
            state = self._networks.get(entry.network_id)
            if state is None:
                continue  # nothing to compare with (an unreadable network record)
            try:
                with self._failure("repair", port_id, state.network):
                    why = self._drift(port_id, entry, state)
                    if why is None:
                        continue
                    LOG.warning(
                        "Port %s of %s: %s; plugging it again", port_id, entry.instance_uuid, why
                    )
                    port = base.Port(port_id, state.network, entry.mac, entry.addresses)
                    self._wire(port, entry, state, self._mtu(state.network))
                    repaired = True
            except cd_exception.ComputeDriverError:
                LOG.exception("Could not repair port %s of %s", port_id, entry.instance_uuid)
        return repaired

    def _free_ofport(self) -> int:
        used = {p.ofport for p in self._ports.values()} | self._foreign_ofports
        # NOTE: the number after the highest first (no scan in the common
        # case); the lowest free one only once the top is reached.
        start = max(used | {OFPORT_GUEST_FIRST - 1}) + 1
        if start <= OFPORT_MAX:
            return start
        for ofport in range(OFPORT_GUEST_FIRST, OFPORT_MAX + 1):
            if ofport not in used:
                return ofport
        raise ovs_db.OvsDbError("no free OpenFlow port number on the integration bridge")

    def _plug_command(
        self, tap: str, port: base.Port, entry: PortState, state: NetState, mtu: int
    ) -> ovs_db.PlugPortCommand:
        external_ids = {
            IFACE_PORT: port.id,
            IFACE_MAC: entry.mac,
            IFACE_INSTANCE: entry.instance_uuid,
            IFACE_NETWORK: port.network.id,
            IFACE_ADDRESSES: ",".join(entry.addresses),
        }
        return ovs_db.PlugPortCommand(
            self.db.api,
            self.int_br,
            tap,
            # NOTE: an access port of the network's local VLAN, never a trunk:
            # tagged frames from the guest are dropped by the switch.
            port_columns={"tag": state.vlan, "vlan_mode": "access", "trunks": []},
            iface_columns={
                "external_ids": external_ids,
                "ofport_request": entry.ofport,
                "mtu_request": mtu,
            },
        )

    def _undo_plug(self, tap: str, row_made: bool, tap_made: bool, new_network: str | None) -> None:
        try:
            if row_made:
                with self.db.transaction() as txn:
                    txn.add(self.db.api.del_port(tap, bridge=self.int_br, if_exists=True))
            if tap_made:
                self._taps().delete(tap)
            if new_network is not None and new_network in self._networks:
                if not self._ports_of(new_network):
                    self._teardown(self._networks[new_network], quiet=True)
        except Exception:  # noqa: BLE001 - keep the first error, log this one
            LOG.exception("Could not remove port %s while undoing a failed plug", tap)

    def _taps(self) -> netlink.Netlink:
        """The netlink helper for the guests' taps (in ``[ovs] netns`` when set)."""
        if self._nl is None:
            self._nl = netlink.Netlink(self.opts.netns)
        return self._nl
