"""Options of the libvirt virt driver: ``[libvirt]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup("libvirt", title="libvirt driver", help="The libvirt virt driver.")

OPTS = [
    cfg.StrOpt(
        "uri",
        default="qemu:///system",
        help="libvirt connection URI. 'test:///default' is libvirt's "
        "in-process test driver (no guests run; for demos and scale tests).",
    ),
    cfg.StrOpt(
        "virt_type",
        default="auto",
        choices=[
            ("auto", "kvm when the CPU has vmx/svm and a KVM probe runs guest code, else qemu"),
            ("kvm", "hardware acceleration; refuse to start without it"),
            ("qemu", "software emulation (TCG); always works, slowly"),
        ],
        help="Domain type of the guests. NOTE: /dev/kvm existing is not "
        "enough: nested or restricted hosts expose it while guests hang.",
    ),
    cfg.StrOpt(
        "instances_path",
        default="$state_path/instances",
        help="Directory holding one sub-directory per instance (config drive, "
        "console log). Related options: [DEFAULT] state_path.",
    ),
    cfg.IntOpt(
        "console_log_max_bytes",
        default=100 * 1024,
        min=1024,
        max=16 * 1024 * 1024,
        help="Bytes of the serial console log that console-log returns at most.",
    ),
    cfg.StrOpt(
        "cpu_dedicated_set",
        default="",
        help="Host CPUs (a cpuset such as '2-5,8') reserved for guests whose "
        "flavor asks hw:cpu_policy=dedicated; each such vCPU is pinned to one "
        "of them, and other guests keep off them. Empty: no dedicated CPUs, "
        "and dedicated flavors cannot be built on this host.",
    ),
    cfg.IntOpt(
        "shutdown_timeout",
        default=60,
        min=0,
        max=3600,
        help="Seconds a stop or soft reboot waits for the guest to shut "
        "down after an ACPI request before the guest is forced off. "
        "Related options: shutdown_retry_interval.",
    ),
    cfg.IntOpt(
        "shutdown_retry_interval",
        default=10,
        min=1,
        max=600,
        help="Seconds between repeated ACPI shutdown requests while a stop "
        "waits (a guest may miss the first one while it boots).",
    ),
    cfg.FloatOpt(
        "stopped_event_delay",
        default=15.0,
        min=0.0,
        max=300.0,
        help="Seconds a guest's 'stopped' event is held back before the "
        "scheduler hears of it; a start within that time cancels it, so a "
        "reboot does not show the server as stopped for a moment.",
    ),
    cfg.IntOpt(
        "kvm_probe_timeout",
        default=5,
        min=1,
        max=60,
        help="Seconds the KVM probe may take to run its few guest "
        "instructions before KVM counts as unusable.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
