"""Options of the ``[DEFAULT]`` group that every service reads."""

import socket

from oslo_config import cfg

GROUP = None

OPTS = [
    cfg.HostAddressOpt(
        "host",
        default=socket.gethostname(),
        sample_default="<hostname>",
        help="Name of this host as the scheduler and the message bus know it. "
        "The compute agent listens on topic 'compute' with this server name. "
        "Must be unique across the cloud and stable across restarts.",
    ),
    cfg.StrOpt(
        "state_path",
        default="/var/lib/compute-driver",
        help="Top directory for the state files of compute-driver (the "
        "scheduler's SQLite database, instance files, image cache). "
        "It must be traversable by the QEMU user (mode 0755), because "
        "libvirt hands the guest's kernel, disks and config drive to QEMU "
        "from here. Related options: [database] connection, [libvirt] "
        "instances_path, [image] store_path.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS)


def list_opts() -> dict:
    return {"DEFAULT": OPTS}
