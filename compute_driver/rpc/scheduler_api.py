"""Client side of the scheduler API (topic ``scheduler``).

Version history:
  1.0 - servers (create, list, show, delete, actions, console log), hosts, flavors,
        images. Issue 12: the agent reports (report_host, instance_update,
        set_host_enabled automatic, instance_power_changed, instance_deleted,
        host_networks, host_instances) moved to their own topic
        (compute_driver/rpc/agent_reports_api.py); this topic no longer answers
        them, and set_host_enabled no longer takes ``automatic``.
"""

from __future__ import annotations

from typing import Any

from compute_driver.rpc.client import RPCClientBase

TOPIC = "scheduler"


class SchedulerAPI(RPCClientBase):
    """Every public scheduler method, one Python method each.

    Calls return plain dicts (the stable shapes documented in
    docs/rpc-api.md) or raise the typed errors of compute_driver.exception.
    """

    TOPIC = TOPIC
    API_VERSION = "1.0"
    CAP_OPTION = "scheduler"

    def call(self, method: str, **kwargs: Any) -> Any:
        """Call ``method`` with keyword arguments, leaving out those that are None."""
        return self._call(method, {k: v for k, v in kwargs.items() if v is not None})
