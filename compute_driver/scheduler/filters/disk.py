"""Room for the request's root disk, with ``[scheduler] disk_allocation_ratio``."""

from __future__ import annotations

from oslo_config import cfg

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, Limits, RequestSpec


class DiskFilter(BaseHostFilter):
    name = "disk"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.limits = Limits.from_conf(conf)

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        free = host.free_disk_gb(self.limits)
        if request.disk_gb > free:
            return "needs %d GiB disk, %g free" % (request.disk_gb, free)
        return None
