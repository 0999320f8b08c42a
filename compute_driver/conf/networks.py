"""Options of the scheduler's tenant networks: ``[networks]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "networks",
    title="Tenant networks",
    help="How the scheduler allocates network segments and addresses.",
)

MAX_VNI = 2**24 - 1

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
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
