"""Options of server snapshots: ``[snapshots]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "snapshots",
    title="server snapshots",
    help="Snapshots of a server's disks (and memory), kept on its host by the virt driver.",
)

OPTS = [
    cfg.IntOpt(
        "max_concurrent_snapshots",
        default=2,
        min=1,
        max=64,
        help="How many snapshot creates, reverts and deletes one agent runs "
        "at the same time; further ones wait their turn. A memory snapshot "
        "writes the whole guest RAM to disk.",
    ),
    cfg.IntOpt(
        "max_snapshots_per_instance",
        default=10,
        min=1,
        help="Integer, at least 1. The most snapshots one server may have, "
        "internal and external together. Creating one more is refused "
        "(instance_snapshot_limit_reached) until one is deleted. Every "
        "external snapshot adds a qcow2 overlay to the disk's backing chain, "
        "which QEMU walks on reads, so long chains slow the guest down.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
