"""Client side of the scheduler API (topic ``scheduler``).

Version history:
  1.0 - servers (create, list, show, delete, actions, console log), hosts, flavors,
        images. Issue 12: the agent reports (report_host, instance_update,
        set_host_enabled automatic, instance_power_changed, instance_deleted,
        host_networks, host_instances) moved to their own topic
        (compute_driver/rpc/agent_reports_api.py); this topic no longer answers
        them, and set_host_enabled no longer takes ``automatic``.
        Issue 12: every call may carry ``signature``, made with the client
        key over the method, payload and context (``[client] key``,
        compute_driver/rpc/report_signing.py); a scheduler with
        ``[agent_reports] secret`` refuses a call without it.
"""

from __future__ import annotations

from typing import Any

from oslo_config import cfg

from compute_driver.rpc import report_signing
from compute_driver.rpc.client import RPCClientBase
from compute_driver.rpc.context import RequestContext

TOPIC = "scheduler"


class SchedulerAPI(RPCClientBase):
    """Every public scheduler method, one Python method each.

    Calls return plain dicts (the stable shapes documented in
    docs/rpc-api.md) or raise the typed errors of compute_driver.exception.
    """

    TOPIC = TOPIC
    API_VERSION = "1.0"
    CAP_OPTION = "scheduler"

    def __init__(
        self,
        conf: cfg.ConfigOpts = cfg.CONF,
        timeout: int | None = None,
        context: RequestContext | None = None,
    ) -> None:
        super().__init__(conf, timeout=timeout, context=context)
        #: The client key every call is signed with; None sends them unsigned.
        self._key: str | None = report_signing.configured_client_key(conf)

    def _outgoing(
        self, method: str, context: dict[str, Any], payload: dict[str, Any]
    ) -> dict[str, Any]:
        # NOTE: the context is signed too: it says who is an admin, and an
        # agent's credential can put a call into this topic's queue.
        if self._key is None:
            return payload
        return report_signing.sign_call(self._key, method, context, payload)

    def call(self, method: str, **kwargs: Any) -> Any:
        """Call ``method`` with keyword arguments, leaving out those that are None."""
        return self._call(method, {k: v for k, v in kwargs.items() if v is not None})
