"""Keep the hosts of the availability zone the request names."""

from __future__ import annotations

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, RequestSpec


class AvailabilityZoneFilter(BaseHostFilter):
    name = "availability_zone"

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        if request.availability_zone and host.availability_zone != request.availability_zone:
            return "in zone %s, not %s" % (host.availability_zone, request.availability_zone)
        return None
