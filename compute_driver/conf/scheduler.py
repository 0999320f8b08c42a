"""Options of the scheduler service: ``[scheduler]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup("scheduler", title="Scheduler", help="The scheduler service.")

OPTS = [
    cfg.IntOpt(
        "service_down_time",
        default=60,
        min=1,
        max=86400,
        help="Seconds without a report after which a host counts as down "
        "and receives no new instances. Related options: [agent] "
        "report_interval.",
    ),
    cfg.FloatOpt(
        "cpu_allocation_ratio",
        default=4.0,
        min=0.1,
        max=64.0,
        help="Virtual CPUs placed per physical CPU of a host.",
    ),
    cfg.FloatOpt(
        "ram_allocation_ratio",
        default=1.0,
        min=0.1,
        max=16.0,
        help="Guest memory placed per byte of a host's memory.",
    ),
    cfg.FloatOpt(
        "disk_allocation_ratio",
        default=1.0,
        min=0.1,
        max=64.0,
        help="Guest root disk placed per byte of a host's free disk. Disks "
        "are thin (qcow2 overlays), so a ratio above 1 is common.",
    ),
    cfg.IntOpt(
        "reserved_host_memory_mb",
        default=512,
        min=0,
        help="Memory in MiB of every host kept for the host itself.",
    ),
    cfg.IntOpt(
        "rpc_workers",
        default=16,
        min=2,
        max=256,
        help="Threads serving RPC requests in the scheduler.",
    ),
    cfg.IntOpt(
        "periodic_interval",
        default=10,
        min=1,
        max=3600,
        help="Seconds between two runs of the scheduler's periodic checks (hosts gone down).",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
