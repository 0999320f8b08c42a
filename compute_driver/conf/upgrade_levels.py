"""RPC version caps for rolling upgrades: ``[upgrade_levels]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "upgrade_levels",
    title="RPC version caps",
    help="During a rolling upgrade, cap the RPC version that clients send so "
    "that services not yet upgraded still understand it.",
)

_VERSION = r"^\d+\.\d+$"

OPTS = [
    cfg.StrOpt(
        "compute",
        regex=_VERSION,
        help="Highest compute API version to send (for example '1.0'). "
        "Unset: the newest this code knows.",
    ),
    cfg.StrOpt(
        "scheduler",
        regex=_VERSION,
        help="Highest scheduler API version to send (for example '1.0'). "
        "Unset: the newest this code knows.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
