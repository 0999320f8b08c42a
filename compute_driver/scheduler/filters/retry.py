"""Skip hosts already tried for this build, so a reschedule goes elsewhere."""

from __future__ import annotations

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, RequestSpec


class RetryFilter(BaseHostFilter):
    name = "retry"

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        if host.name in request.tried_hosts:
            return "already tried for this build"
        return None
