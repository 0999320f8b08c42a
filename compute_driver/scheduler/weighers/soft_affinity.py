"""Soft server-group policies: prefer hosts with members (soft-affinity) or
without (soft-anti-affinity); never removes a host."""

from __future__ import annotations

from compute_driver.scheduler.host_state import HostState, RequestSpec
from compute_driver.scheduler.weighers.base import BaseHostWeigher


class SoftAffinityWeigher(BaseHostWeigher):
    name = "soft_affinity"
    multiplier_option = "soft_affinity_weight_multiplier"

    def weigh(self, host: HostState, request: RequestSpec) -> float:
        members = float(request.group_hosts.get(host.name, 0))
        if request.group_policy == "soft-affinity":
            return members
        if request.group_policy == "soft-anti-affinity":
            return -members
        return 0.0
