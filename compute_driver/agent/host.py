"""What the agent's port and volume endpoints need from the host they serve.

NOTE: a Protocol, so that ``ports`` and ``volumes`` name the manager's parts
they use without importing :mod:`compute_driver.agent.manager`, which builds
them (an import cycle, even under ``TYPE_CHECKING``). It lists today's
coupling as it is, private names included; the host object of issue 14 will
replace it with public ones.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from oslo_config import cfg

from compute_driver.rpc.agent_reports_api import AgentReportsAPI
from compute_driver.virt.base import ComputeDriver


class EndpointHost(Protocol):
    """The parts of :class:`~compute_driver.agent.manager.ComputeManager` the endpoints use."""

    @property
    def conf(self) -> cfg.ConfigOpts:
        """The agent's configuration."""

    @property
    def host(self) -> str:
        """This host's name."""

    @property
    def driver(self) -> ComputeDriver:
        """The virt driver."""

    @property
    def storage(self) -> dict[str, Any]:
        """Storage backends by name."""

    @property
    def networks(self) -> dict[str, Any]:
        """Network plugins by name."""

    @property
    def _reconcile_scheduler(self) -> AgentReportsAPI:
        """The scheduler client for reconciliation calls."""

    def _instance_lock(self, uuid: str) -> threading.Lock:
        """The lock of one instance UUID."""
