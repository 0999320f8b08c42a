"""The host methods of the scheduler API 1.0 (and ``ping``): list, show, enable, disable."""

from __future__ import annotations

import logging
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler.aggregates import AggregateManager
from compute_driver.scheduler.host_view import HostView
from compute_driver.scheduler.scope import scheduler_method
from compute_driver.scheduler.store import Store

LOG = logging.getLogger(__name__)


class HostEndpoint:
    """Serves the host methods of topic ``scheduler``."""

    target = messaging.Target(version="1.0")

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        store: Store,
        aggregates: AggregateManager,
        host_view: HostView,
    ) -> None:
        self.conf = conf
        self.store = store
        self.aggregates = aggregates
        self.host_view = host_view

    @property
    def _down_after(self) -> int:
        return self.conf.scheduler.service_down_time

    @scheduler_method
    def ping(self, context: RequestContext) -> dict[str, str]:
        return {"service": "compute-scheduler", "version": self.target.version}

    @scheduler_method
    def set_host_enabled(
        self, ctxt: dict, host: str, enabled: bool, reason: str | None = None
    ) -> dict[str, Any]:
        return self.enable_host(host, enabled, reason, automatic=False)

    def enable_host(
        self, host: str, enabled: bool, reason: str | None, automatic: bool
    ) -> dict[str, Any]:
        """Enable or disable ``host``: by an operator, or ``automatic`` from its agent."""
        record = self.store.set_host_enabled(host, enabled, reason, automatic, self._down_after)
        self.host_view.invalidate()
        LOG.info(
            "Host %s: enabled=%s (%s)", host, record["enabled"], record["disabled_reason"] or "-"
        )
        return record

    @scheduler_method
    def list_hosts(self, context: RequestContext) -> list:
        return self.store.list_hosts(self._down_after)

    @scheduler_method
    def show_host(self, context: RequestContext, host: str) -> dict[str, Any]:
        record = self.aggregates.annotate([self.store.get_host(host, self._down_after)])[0]
        record["aggregate_properties"] = {
            k: sorted(v) for k, v in record["aggregate_properties"].items()
        }
        servers = self.store.list_instances(host=host)
        record["instances"] = [i["uuid"] for i in servers]
        # NOTE: what each server claims here (ERROR servers claim nothing).
        record["allocations"] = [
            {k: i[k] for k in ("uuid", "name", "vcpus", "memory_mb", "root_gb", "vm_state")}
            for i in servers
            if i["vm_state"] != "error"
        ]
        return record
