"""Hard server-group policies: members together (affinity) or apart (anti-affinity).

The soft policies are preferences, weighed by the ``soft_affinity`` weigher.
Two members placed at the same moment can both pass these filters; the
scheduler checks again once it holds the claim (the late check in
``manager._schedule``) and moves on to the next host when they clash.
"""

from __future__ import annotations

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, RequestSpec


class ServerGroupAffinityFilter(BaseHostFilter):
    name = "server_group_affinity"

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        if request.group_policy != "affinity" or not request.group_hosts:
            return None
        if host.name not in request.group_hosts:
            return "the group's members are on %s" % ", ".join(sorted(request.group_hosts))
        return None


class ServerGroupAntiAffinityFilter(BaseHostFilter):
    name = "server_group_anti_affinity"

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        if request.group_policy == "anti-affinity" and host.name in request.group_hosts:
            return "a member of its anti-affinity group is here"
        return None
