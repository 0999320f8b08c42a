"""Room for the request's vCPUs, with ``[scheduler] cpu_allocation_ratio``."""

from __future__ import annotations

from oslo_config import cfg

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, Limits, RequestSpec


class CpuFilter(BaseHostFilter):
    name = "cpu"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.limits = Limits.from_conf(conf)

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        free = host.free_vcpus(self.limits)
        if request.vcpus > free:
            return "needs %d vCPUs, %g free" % (request.vcpus, free)
        return None
