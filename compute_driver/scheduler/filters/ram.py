"""Room for the request's memory, with ``[scheduler] ram_allocation_ratio``
and ``reserved_host_memory_mb``."""

from __future__ import annotations

from oslo_config import cfg

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, Limits, RequestSpec


class RamFilter(BaseHostFilter):
    name = "ram"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.limits = Limits.from_conf(conf)

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        free = host.free_memory_mb(self.limits)
        if request.memory_mb > free:
            return "needs %d MiB RAM, %g free" % (request.memory_mb, free)
        return None
