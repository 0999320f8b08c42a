"""Loading plugins by name with stevedore.

Entry-point names are the words operators write in config files, so a
wrong name is a configuration error: it names the option, where it was set,
and the names that exist.

A plugin's options are its own: the plugin's module declares ``list_opts()``
(``{group: [options]}``), the loader registers them when it loads the plugin,
and :func:`list_network_opts` / :func:`list_storage_opts` (the
``oslo.config.opts`` entry points) gather them from the installed entry
points for ``oslo-config-generator``. The core names no plugin.
"""

from __future__ import annotations

import logging
import sys
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


def load(
    namespace: str,
    name: str,
    conf: cfg.ConfigOpts,
    group: str,
    option: str,
    services: Any = None,
) -> Any:
    """Instantiate plugin ``name`` of ``namespace`` with ``conf``.

    The plugin's own option groups are registered first (see the module
    docstring); ``services`` (what the host lends the plugin, e.g.
    :class:`storage_backends.base.Services`) is passed as ``services=``.

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
        manager: driver.DriverManager = driver.DriverManager(namespace, name, invoke_on_load=False)
        plugin_class = manager.driver
        register_plugin_opts(conf, plugin_class)
    except Exception as exc:
        LOG.exception("Plugin %s of %s failed to load", name, namespace)
        raise exception.InvalidConfig(
            reason="[%s] %s: plugin %r of %s failed to load: %s"
            % (group, option, name, namespace, exc)
        ) from exc
    config.check_options(conf)  # the plugin's own groups, now registered
    try:
        plugin = plugin_class(conf) if services is None else plugin_class(conf, services=services)
    except Exception as exc:
        LOG.exception("Plugin %s of %s failed to load", name, namespace)
        raise exception.InvalidConfig(
            reason="[%s] %s: plugin %r of %s failed to load: %s"
            % (group, option, name, namespace, exc)
        ) from exc
    return plugin


def plugin_opts(plugin_class: Any) -> dict[Any, list[cfg.Opt]]:
    """``{group: [options]}`` that the module of ``plugin_class`` declares (may be empty)."""
    module = sys.modules[plugin_class.__module__]
    list_opts = getattr(module, "list_opts", None)
    return dict(list_opts()) if list_opts is not None else {}


def register_plugin_opts(conf: cfg.ConfigOpts, plugin_class: Any) -> None:
    """Register the option groups of ``plugin_class`` on ``conf`` (idempotent).

    NOTE: done when the plugin is loaded, at service start, so a bad value in
    say ``[dir]`` still stops the service before it serves anything.
    """
    for group, opts in plugin_opts(plugin_class).items():
        conf.register_group(group if isinstance(group, cfg.OptGroup) else cfg.OptGroup(group))
        conf.register_opts(opts, group=group)


def _family_opts(namespace: str) -> list[tuple[Any, list[cfg.Opt]]]:
    manager: extension.ExtensionManager[Any] = extension.ExtensionManager(
        namespace, invoke_on_load=False
    )
    pairs: list[tuple[Any, list[cfg.Opt]]] = []
    for ext in sorted(manager, key=lambda ext: ext.name):
        pairs.extend(plugin_opts(ext.plugin).items())
    return pairs


def list_network_opts() -> list[tuple[Any, list[cfg.Opt]]]:
    """(group, options) of every installed network plugin, for oslo-config-generator."""
    return _family_opts(NETWORK_NAMESPACE)


def list_storage_opts() -> list[tuple[Any, list[cfg.Opt]]]:
    """(group, options) of every installed storage backend, for oslo-config-generator."""
    return _family_opts(STORAGE_NAMESPACE)
