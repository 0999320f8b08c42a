"""Options of the scheduler's tenant networks: ``[networks]``."""

import ipaddress

from oslo_config import cfg, types

GROUP = cfg.OptGroup(
    "networks",
    title="Tenant networks",
    help="How the scheduler allocates network segments and addresses.",
)

MAX_VNI = 2**24 - 1


class Cidr(types.String):
    """An IPv4 or IPv6 network in CIDR notation (host bits must be zero)."""

    def __init__(self) -> None:
        super().__init__(type_name="CIDR value")

    def __call__(self, value: str) -> str:
        value = super().__call__(value)
        try:
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            raise ValueError("%r is not a network in CIDR notation: %s" % (value, exc)) from None


OPTS = [
    cfg.IntOpt(
        "vni_min",
        default=5000,
        min=1,
        max=MAX_VNI,
        help="Lowest VNI given to vxlan and geneve networks (1-16777215). "
        "Related options: vni_max.",
    ),
    cfg.IntOpt(
        "vni_max",
        default=MAX_VNI,
        min=1,
        max=MAX_VNI,
        help="Highest VNI given to vxlan and geneve networks (24-bit limit). "
        "Related options: vni_min.",
    ),
    cfg.IntOpt(
        "vlan_min",
        default=1,
        min=1,
        max=4094,
        help="Lowest VLAN ID given to vlan networks, per physical network. "
        "Related options: vlan_max.",
    ),
    cfg.IntOpt(
        "vlan_max",
        default=4094,
        min=1,
        max=4094,
        help="Highest VLAN ID given to vlan networks, per physical network. "
        "Related options: vlan_min.",
    ),
    cfg.StrOpt(
        "default_physnet",
        default="physnet1",
        help="Physical network of flat and vlan networks created without --physnet. "
        "Its name must match the hosts' interface mappings.",
    ),
    cfg.IntOpt(
        "underlay_mtu",
        default=1500,
        min=576,
        max=65535,
        help="MTU of the hosts' underlay. A network's MTU, unless given, is this "
        "minus the encapsulation: 50 bytes for vxlan and geneve (over IPv4), "
        "nothing for flat and vlan.",
    ),
    cfg.ListOpt(
        "reserved_cidrs",
        item_type=Cidr(),
        default=[],
        help="Networks (comma-separated CIDRs) no tenant subnet may overlap: the "
        "hosts' underlay, management and storage networks, so that a guest can "
        "never be given an address that shadows a host, the broker or a Ceph "
        "monitor. Loopback, link-local, multicast, unspecified and reserved "
        "ranges are always refused. Related options: underlay_mtu.",
    ),
]


#: (low, high) option pairs: a service refuses to start when low > high.
RANGES = (("vni_min", "vni_max"), ("vlan_min", "vlan_max"))


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
