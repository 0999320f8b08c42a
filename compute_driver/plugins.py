"""Loading plugins by name with stevedore.

Entry-point names are the words operators write in config files, so a
wrong name is a configuration error: it names the option, where it was set,
and the names that exist.
"""

from __future__ import annotations

import logging
from typing import Any

from oslo_config import cfg
from stevedore import driver, extension

from compute_driver import config, exception

LOG = logging.getLogger(__name__)

VIRT_NAMESPACE = "compute_driver.virt"
NETWORK_NAMESPACE = "compute_driver.network"
STORAGE_NAMESPACE = "compute_driver.storage"


def available(namespace: str) -> list[str]:
    """Names of the plugins installed in ``namespace``."""
    return sorted(extension.ExtensionManager(namespace, invoke_on_load=False).names())


def load(namespace: str, name: str, conf: cfg.ConfigOpts, group: str, option: str) -> Any:
    """Instantiate plugin ``name`` of ``namespace`` with ``conf``.

    :param group: the option group naming the plugin (for the error message).
    :param option: the option naming the plugin (for the error message).
    :raises InvalidConfig: no plugin of that name; or it failed to load.
    """
    names = available(namespace)
    if name not in names:
        raise exception.InvalidConfig(
            reason="%s: [%s] %s = %r is invalid: no such plugin in %s; available: %s"
            % (
                config.option_location(conf, group, option),
                group,
                option,
                name,
                namespace,
                ", ".join(names) or "none",
            )
        )
    try:
        manager: driver.DriverManager = driver.DriverManager(
            namespace, name, invoke_on_load=True, invoke_args=(conf,)
        )
    except Exception as exc:
        LOG.exception("Plugin %s of %s failed to load", name, namespace)
        raise exception.InvalidConfig(
            reason="[%s] %s: plugin %r of %s failed to load: %s"
            % (group, option, name, namespace, exc)
        ) from exc
    return manager.driver
