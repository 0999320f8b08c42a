"""Options of the ``ovs`` network plugin (group ``[ovs]``)."""

from __future__ import annotations

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "ovs",
    title="ovs network plugin",
    help="Open vSwitch: an integration bridge with a local VLAN per network, a tunnel "
    "bridge with flow-based VXLAN/GENEVE ports, provider bridges for flat and vlan "
    "networks, anti-spoofing rules per port.",
)

OPTS = [
    cfg.StrOpt(
        "integration_bridge",
        default="br-cd-int",
        help="Bridge the guests' ports are on (created if missing, fail_mode=secure); "
        "at most 15 characters. Not br-int, which belongs to Neutron's OVS agent or "
        "ovn-controller on a host that also runs them (docs/beside-neutron.md); ports "
        "that an older version left on br-int are moved here when the agent starts. "
        "Related options: tunnel_bridge, datapath_type.",
    ),
    cfg.StrOpt(
        "tunnel_bridge",
        default="br-cd-tun",
        help="Bridge of the VXLAN/GENEVE tunnel ports (created if missing, "
        "fail_mode=secure), patched to the integration bridge; at most 15 characters. "
        "Its patch and tunnel ports are named after it (<bridge>-int, <bridge>-vx, "
        "<bridge>-gnv). Related options: integration_bridge, local_ip.",
    ),
    cfg.StrOpt(
        "datapath_type",
        default="system",
        choices=[
            ("system", "the kernel datapath (module openvswitch)"),
            ("netdev", "the userspace datapath (no kernel module; slower)"),
        ],
        help="Datapath of the bridges this plugin creates. 'netdev' also turns off the "
        "host-side checksum offload of guest NICs (partial checksums break TCP there).",
    ),
    cfg.StrOpt(
        "ovsdb_connection",
        default="unix:/var/run/openvswitch/db.sock",
        help="OVSDB server of this host's ovs-vswitchd (unix:PATH, tcp:IP:PORT or "
        "ssl:IP:PORT). Related options: run_dir, ovsdb_timeout.",
    ),
    cfg.IntOpt(
        "ovsdb_timeout",
        default=10,
        min=1,
        max=300,
        help="Seconds (1-300) to wait for OVSDB (including ovs-vswitchd applying a "
        "change) and for ovs-vswitchd to answer each OpenFlow change.",
    ),
    cfg.StrOpt(
        "run_dir",
        default="/var/run/openvswitch",
        help="ovs-vswitchd's run directory (OVS_RUNDIR), where its per-bridge OpenFlow "
        "sockets <bridge>.mgmt are. Related options: ovsdb_connection.",
    ),
    cfg.IPOpt(
        "local_ip",
        help="This host's tunnel endpoint (VTEP) address, which other hosts reach. "
        "Required for vxlan and geneve networks. With datapath_type=netdev it must be on "
        "an OVS internal port of another bridge. Related options: underlay_mtu.",
    ),
    cfg.ListOpt(
        "bridge_mappings",
        default=[],
        help="Provider bridges, as <physical_network>:<bridge> pairs (e.g. "
        "'physnet1:br-eth1'); each bridge must exist and hold its physical interface. "
        "flat and vlan networks use them.",
    ),
    cfg.IntOpt(
        "underlay_mtu",
        default=1500,
        min=576,
        max=65535,
        help="MTU of the path between VTEPs (576-65535). A tunnel network's MTU is this "
        "minus the encapsulation (vxlan 50, geneve 58 bytes over IPv4; 20 more over IPv6) "
        "or the network's own MTU when smaller. Related options: local_ip.",
    ),
    cfg.StrOpt(
        "netns",
        help="Name of a network namespace (under /run/netns) in which to make the guests' "
        "tap devices instead of the agent's own. Unset: the host's namespace. For tests "
        "that simulate several hosts on one machine: that host's libvirtd (which attaches "
        "QEMU to the taps) and ovs-vswitchd must run in this namespace too. Related "
        "options: ovsdb_connection, run_dir.",
    ),
]


def list_opts() -> dict:
    return {GROUP: OPTS}
