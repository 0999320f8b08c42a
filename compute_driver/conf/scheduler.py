"""Options of the scheduler service: ``[scheduler]``.

The placement plugins (``compute_driver.scheduler.filters`` and
``compute_driver.scheduler.weighers``) read their options from this group
too: each option's help names the plugin that reads it.
"""

from oslo_config import cfg

GROUP = cfg.OptGroup("scheduler", title="Scheduler", help="The scheduler service.")

DEFAULT_FILTERS = [
    "retry",
    "compute",
    "availability_zone",
    "aggregate_instance_extra_specs",
    "server_group_affinity",
    "server_group_anti_affinity",
    "image_properties",
    "network_plugins",
    "storage_backends",
    "cpu",
    "ram",
    "disk",
]
DEFAULT_WEIGHERS = ["ram", "cpu", "disk", "build_failure", "soft_affinity"]

OPTS = [
    cfg.IntOpt(
        "service_down_time",
        default=60,
        min=1,
        max=86400,
        help="Seconds without a report after which a host counts as down "
        "and receives no new instances. Related options: [agent] "
        "report_interval; the 'compute' filter.",
    ),
    cfg.FloatOpt(
        "host_view_ttl",
        default=1.0,
        min=0.0,
        max=60.0,
        help="Seconds the scheduler keeps the host records it read for placement "
        "before reading them again (0: read them for every server). Its own "
        "claims are counted in at once; what other schedulers claim, and hosts "
        "going down, are seen within this time. Claims stay exact either way: "
        "a host that has no room fails its claim and the next one is tried. "
        "Related options: service_down_time.",
    ),
    cfg.FloatOpt(
        "cpu_allocation_ratio",
        default=4.0,
        min=0.1,
        max=64.0,
        help="Virtual CPUs placed per physical CPU of a host. Read by the "
        "'cpu' filter and weigher and by the claim, so that a host the filter "
        "passes is one the claim accepts.",
    ),
    cfg.FloatOpt(
        "ram_allocation_ratio",
        default=1.0,
        min=0.1,
        max=16.0,
        help="Guest memory placed per byte of a host's memory. Read by the "
        "'ram' filter and weigher and by the claim. Related options: "
        "reserved_host_memory_mb.",
    ),
    cfg.FloatOpt(
        "disk_allocation_ratio",
        default=1.0,
        min=0.1,
        max=64.0,
        help="Guest root disk placed per byte of a host's free disk. Disks "
        "are thin (qcow2 overlays), so a ratio above 1 is common. Read by the "
        "'disk' filter and weigher and by the claim.",
    ),
    cfg.IntOpt(
        "reserved_host_memory_mb",
        default=512,
        min=0,
        help="Memory in MiB of every host kept for the host itself. Related "
        "options: ram_allocation_ratio.",
    ),
    cfg.ListOpt(
        "enabled_filters",
        default=DEFAULT_FILTERS,
        help="Filters that drop hosts unable to take a server, run in this "
        "order; each sees only the hosts the ones before it kept. Names are "
        "entry points of the 'compute_driver.scheduler.filters' namespace: "
        "retry, compute, availability_zone, aggregate_instance_extra_specs, "
        "server_group_affinity, server_group_anti_affinity, num_instances, "
        "image_properties, network_plugins, storage_backends, cpu, ram, disk. "
        "Put cheap, selective filters first. "
        "When no host is left, the error says how many hosts each filter "
        "removed and why. Related options: weighers.",
    ),
    cfg.ListOpt(
        "weighers",
        default=DEFAULT_WEIGHERS,
        help="Weighers that order the hosts the filters kept. Each weigher's "
        "values are scaled to 0..1 across those hosts, times its multiplier, "
        "and summed; the claim is tried on the heaviest host first. Names are "
        "entry points of the 'compute_driver.scheduler.weighers' namespace: "
        "ram, cpu, disk, build_failure, soft_affinity. Related options: "
        "*_weight_multiplier.",
    ),
    cfg.StrOpt(
        "default_availability_zone",
        default="default",
        help="Availability zone of hosts that are in no aggregate with a zone. "
        "Read by the availability_zone filter.",
    ),
    cfg.FloatOpt(
        "soft_affinity_weight_multiplier",
        default=1.0,
        min=0.0,
        help="Weight of the soft_affinity weigher: how strongly soft-affinity "
        "groups prefer hosts with members, and soft-anti-affinity groups hosts "
        "without (0 turns it off).",
    ),
    cfg.IntOpt(
        "max_attempts",
        default=3,
        min=1,
        max=10,
        help="Hosts a server's build is tried on (1-10). A build that fails on a "
        "host releases that host's claim and goes to another host that has not "
        "failed it yet; after this many failures the server is ERROR with every "
        "attempt's reason. 1: no reschedule. Related options: enabled_filters "
        "(the 'retry' filter skips the hosts already tried).",
    ),
    cfg.IntOpt(
        "max_instances_per_host",
        default=50,
        min=1,
        max=10000,
        help="Most servers the 'num_instances' filter lets a host have, "
        "building ones included. The limit is checked when a host is chosen, "
        "not in the claim, so two concurrent builds may pass it by one. "
        "Related options: enabled_filters (the filter is not enabled by "
        "default; enabling it costs one read of all servers per build).",
    ),
    cfg.FloatOpt(
        "ram_weight_multiplier",
        default=1.0,
        min=-1000.0,
        max=1000.0,
        help="Weight of free memory (the 'ram' weigher). Positive spreads "
        "servers over hosts, negative packs them onto the fullest host "
        "that fits, 0 ignores memory.",
    ),
    cfg.FloatOpt(
        "cpu_weight_multiplier",
        default=1.0,
        min=-1000.0,
        max=1000.0,
        help="Weight of free vCPUs, overcommit included (the 'cpu' weigher). "
        "Positive spreads, negative packs, 0 ignores vCPUs.",
    ),
    cfg.FloatOpt(
        "disk_weight_multiplier",
        default=1.0,
        min=-1000.0,
        max=1000.0,
        help="Weight of free root disk, overcommit included (the 'disk' "
        "weigher). Positive spreads, negative packs, 0 ignores disk.",
    ),
    cfg.FloatOpt(
        "build_failure_weight_multiplier",
        default=1000000.0,
        min=0.0,
        max=1.0e9,
        help="Penalty for a host's recent failed builds (the 'build_failure' "
        "weigher). The default outweighs every resource weigher, so a host "
        "that keeps failing builds is tried last until it builds again; 0 "
        "ignores failures.",
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
