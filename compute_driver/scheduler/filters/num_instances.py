"""At most ``[scheduler] max_instances_per_host`` servers on a host."""

from __future__ import annotations

from oslo_config import cfg

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, RequestSpec


class NumInstancesFilter(BaseHostFilter):
    """NOTE: checked at choice time, not in the claim: two concurrent builds
    may each see room for one more and pass the limit by one."""

    name = "num_instances"
    needs_instance_counts = True

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.limit = conf.scheduler.max_instances_per_host

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        if host.num_instances is None:
            # NOTE: fail closed: a limit we cannot check is not a pass.
            return "its server count is unknown"
        if host.num_instances >= self.limit:
            return "has %d servers, max_instances_per_host is %d" % (host.num_instances, self.limit)
        return None
