"""Only hosts that are enabled and reporting take new servers."""

from __future__ import annotations

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, RequestSpec


class ComputeFilter(BaseHostFilter):
    """Drops disabled hosts and hosts silent for ``[scheduler] service_down_time``."""

    name = "compute"

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        if not host.enabled:
            return "disabled (%s)" % (host.disabled_reason or "no reason given")
        if not host.up:
            return "down (last report %s)" % (host.reported_at or "never")
        return None
