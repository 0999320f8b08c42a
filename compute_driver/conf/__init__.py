"""Configuration: one module per option group, gathered here.

Services call :func:`register_opts` on the global ``cfg.CONF`` (oslo.messaging
registers some of its options only there, so a private ConfigOpts breaks it).
Plugins declare their own groups beside their code and the plugin loader
registers them (:mod:`compute_driver.plugins`); the core names no plugin.
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
    """Register every core option group on ``conf`` (idempotent).

    Plugins' groups are not here: the plugin loader
    (:func:`compute_driver.plugins.load`) registers a plugin's own groups when
    it loads the plugin, at service start.
    """
    for module in CORE_MODULES:
        module.register_opts(conf)
    # NOTE: oslo.messaging registers its options itself when the first
    # transport is made (registering copies here would clash with them).
    oslo_log.register_options(conf)


def list_opts() -> list:
    """(group, options) pairs of the core, for oslo-config-generator.

    The plugins' pairs come from their own ``oslo.config.opts`` entry points.
    """
    pairs = []
    for module in CORE_MODULES:
        for group, opts in module.list_opts().items():
            pairs.append((group, opts))
    return pairs


register_opts(CONF)
