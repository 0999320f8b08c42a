"""The network plugins a request needs are loaded on the host.

A request needs the plugins of the flavor extra spec ``network:plugins``
(comma-separated); the host offers what its agent reports in
``capabilities.network_plugins`` (``[agent] network_plugins``).
"""

from __future__ import annotations

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, RequestSpec


class NetworkPluginsFilter(BaseHostFilter):
    name = "network_plugins"

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        if not request.network_plugins:
            return None
        offered = set(host.capabilities.get("network_plugins") or ())
        missing = request.network_plugins - offered
        if missing:
            return "lacks network plugin(s) %s (has: %s)" % (
                ",".join(sorted(missing)),
                ",".join(sorted(offered)) or "none",
            )
        return None
