"""Configuration: one module per option group, gathered here.

Services call :func:`register_opts` on the global ``cfg.CONF`` (oslo.messaging
registers some of its options only there, so a private ConfigOpts breaks it).
Plugins declare their own groups beside their code; :func:`list_opts`
collects them too, for ``oslo-config-generator``.
"""

from oslo_config import cfg
from oslo_log import log as oslo_log

from compute_driver.conf import (
    agent,
    agent_reports,
    client,
    database,
    default,
    image,
    libvirt,
    networks,
    notifications,
    rpc,
    scheduler,
    snapshots,
    storage,
    upgrade_levels,
)

CONF = cfg.CONF

CORE_MODULES = (
    default,
    agent,
    agent_reports,
    client,
    scheduler,
    networks,
    notifications,
    database,
    libvirt,
    snapshots,
    image,
    storage,
    upgrade_levels,
    rpc,
)


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every option group, plugins' included, on ``conf`` (idempotent).

    Plugins' groups are registered too so that a bad value in, say, ``[dir]``
    stops a service at start rather than when the plugin first reads it.
    """
    for module in CORE_MODULES:
        module.register_opts(conf)
    # NOTE: oslo.messaging registers its options itself when the first
    # transport is made (registering copies here would clash with them).
    oslo_log.register_options(conf)
    for module in _plugin_option_modules():
        for group, opts in module.list_opts().items():
            conf.register_group(group)
            conf.register_opts(opts, group=group)


def _plugin_option_modules() -> list:
    # NOTE: imported here, not at the top, so that reading the core options
    # never pays for a plugin's imports.
    from network_plugins import linux_bridge as linux_bridge_network
    from network_plugins import noop as noop_network
    from network_plugins import ovs as ovs_network
    from storage_backends import dir as dir_storage
    from storage_backends import iscsi as iscsi_storage
    from storage_backends import nfs as nfs_storage
    from storage_backends import rbd as rbd_storage

    return [
        noop_network,
        linux_bridge_network,
        ovs_network,
        dir_storage,
        rbd_storage,
        iscsi_storage,
        nfs_storage,
    ]


def list_opts() -> list:
    """(group, options) pairs of the whole project, for oslo-config-generator."""
    pairs = []
    for module in list(CORE_MODULES) + _plugin_option_modules():
        for group, opts in module.list_opts().items():
            pairs.append((group, opts))
    return pairs


register_opts(CONF)
