"""Free vCPUs (overcommit included): spreads servers by default."""

from __future__ import annotations

from oslo_config import cfg

from compute_driver.scheduler.host_state import HostState, Limits, RequestSpec
from compute_driver.scheduler.weighers.base import BaseHostWeigher


class CpuWeigher(BaseHostWeigher):
    name = "cpu"
    multiplier_option = "cpu_weight_multiplier"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.limits = Limits.from_conf(conf)

    def weigh(self, host: HostState, request: RequestSpec) -> float:
        return host.free_vcpus(self.limits)
