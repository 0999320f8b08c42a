"""Options of the compute agent: ``[agent]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "agent", title="Compute agent", help="The compute agent that runs on each host."
)

OPTS = [
    cfg.StrOpt(
        "virt_driver",
        default="libvirt",
        help="Name of the virt driver to load from the 'compute_driver.virt' "
        "entry-point namespace.",
    ),
    cfg.ListOpt(
        "network_plugins",
        default=["noop"],
        help="Names of the network plugins to load from the "
        "'compute_driver.network' entry-point namespace. Ports name the "
        "plugin that wires them; the first one is the default.",
    ),
    cfg.IntOpt(
        "report_interval",
        default=10,
        min=1,
        max=3600,
        help="Seconds between two reports of this host's resources and "
        "state to the scheduler. Related options: [scheduler] "
        "service_down_time must be several times larger.",
    ),
    cfg.IntOpt(
        "max_concurrent_builds",
        default=4,
        min=1,
        max=64,
        help="How many instance builds this agent runs at the same time. "
        "Further build requests wait their turn. Under software emulation "
        "(virt_type=qemu) each boot takes a whole CPU for seconds.",
    ),
    cfg.StrOpt(
        "unknown_domain_policy",
        default="log",
        choices=[
            ("log", "log a warning and leave the guest alone"),
            ("stop", "shut the guest down (its disks stay)"),
            ("reap", "destroy the guest and delete its disks"),
        ],
        help="What the agent does at start with a guest that carries our "
        "metadata but that the scheduler does not know (left behind by a "
        "lost database, or by a delete that never reached this host). "
        "'reap' deletes data: use it only when the scheduler's database is "
        "known to be right.",
    ),
    cfg.IntOpt(
        "rpc_workers",
        default=16,
        min=2,
        max=256,
        help="Threads serving RPC requests in the agent (oslo.messaging threading executor).",
    ),
    cfg.IntOpt(
        "image_cache_cleanup_interval",
        default=3600,
        min=0,
        max=86400 * 7,
        help="Seconds between cleanups of the storage backends' image caches "
        "(backends whose describe() has image_cache): a cached image no volume "
        "or snapshot backs onto any more is removed. 0 turns cleanup off.",
    ),
    cfg.IntOpt(
        "volume_detach_timeout",
        default=30,
        min=1,
        max=600,
        help="Seconds a running guest has to release a volume or network "
        "interface being detached (libvirt's DEVICE_REMOVED event). The unplug "
        "request is sent again after 1, 2, 4, 8, 8 ... s without an answer (a "
        "booting guest drops it) until this time runs out. A guest that does not "
        "answer keeps the device and the detach fails with device_detach_failed.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
