"""Options that choose storage backends: ``[storage]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup("storage", title="Storage", help="Storage backends of a compute host.")

OPTS = [
    cfg.ListOpt(
        "backends",
        default=["dir"],
        help="Names of the storage backends this host offers, from the "
        "'compute_driver.storage' entry-point namespace. Each reads its own "
        "option group ([dir], [nfs], ...).",
    ),
    cfg.StrOpt(
        "root_backend",
        default="dir",
        help="Backend that holds root disks when a request names none. "
        "Must be one of [storage] backends.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
