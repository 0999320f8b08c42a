"""Hosts whose recent builds failed go last, so one broken host does not
swallow every new server (it passes every filter, and is often the emptiest).

Reads ``HostState.failed_builds``, which is 0 until the store keeps the
counter (see ``host_dict``'s ``failed_builds``).
"""

from __future__ import annotations

from compute_driver.scheduler.host_state import HostState, RequestSpec
from compute_driver.scheduler.weighers.base import BaseHostWeigher


class BuildFailureWeigher(BaseHostWeigher):
    name = "build_failure"
    multiplier_option = "build_failure_weight_multiplier"

    def weigh(self, host: HostState, request: RequestSpec) -> float:
        return -float(host.failed_builds)
