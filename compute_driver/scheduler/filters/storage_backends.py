"""The storage backends a request needs are offered by the host.

A request needs the backends of the flavor extra spec ``storage:backends``
(comma-separated); the host offers what its agent reports in
``capabilities.storage_backends`` (``[storage] backends``).
"""

from __future__ import annotations

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, RequestSpec


class StorageBackendsFilter(BaseHostFilter):
    name = "storage_backends"

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        if not request.storage_backends:
            return None
        offered = set(host.capabilities.get("storage_backends") or ())
        missing = request.storage_backends - offered
        if missing:
            return "lacks storage backend(s) %s (has: %s)" % (
                ",".join(sorted(missing)),
                ",".join(sorted(offered)) or "none",
            )
        return None
