"""The scheduler's second RPC endpoint: the agent reports API, version 1.0.

Served on topic ``agent_reports``, apart from the public ``scheduler``
topic: only agents may publish here (the broker's topic permissions, see
tools/rabbitmq-users.sh), and with ``[agent_reports] secret`` set every
report must be signed with the key of the host it names
(compute_driver/rpc/report_signing.py), checked before anything changes.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver import exception, notifications
from compute_driver.rpc import report_signing, schemas
from compute_driver.rpc.endpoint import rpc_method
from compute_driver.scheduler.build import BuildPath
from compute_driver.scheduler.host_view import HostView
from compute_driver.scheduler.hosts import HostEndpoint
from compute_driver.scheduler.networks import NetworkManager
from compute_driver.scheduler.store import Store
from compute_driver.states import VM_STATE_OF_POWER

LOG = logging.getLogger(__name__)

API = "agent_reports"


def report_method(func: Callable) -> Callable:
    """Expose ``func`` as a report: its schema checked, then its signature."""

    @functools.wraps(func)
    def verified(self: ReportEndpoint, ctxt: dict, /, **kwargs: Any) -> Any:
        if self.secret is not None:
            report_signing.verify(self.secret, func.__name__, kwargs)
        kwargs.pop("signature", None)
        if self.host_view.hearing is not None:
            self.host_view.hearing.heard()
        return func(self, ctxt, **kwargs)

    return rpc_method(API, schemas.REPORT_METHODS)(verified)


class ReportEndpoint:
    """Serves topic ``agent_reports``: what agents say about their own hosts."""

    target = messaging.Target(version="1.0")

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        store: Store,
        hosts: HostEndpoint,
        build: BuildPath,
        networks: NetworkManager,
        host_view: HostView,
        notifier: notifications.Notifier,
    ) -> None:
        self.conf = conf
        self.store = store
        self.hosts = hosts
        self.build = build
        self.networks = networks
        self.host_view = host_view
        self.notifier = notifier
        #: The secret report keys derive from; None accepts unsigned reports.
        self.secret: str | None = conf.agent_reports.secret or None
        self._known_down: set[str] = set()
        self._lock = threading.Lock()

    @property
    def _down_after(self) -> int:
        return self.conf.scheduler.service_down_time

    @report_method
    def report_host(
        self, ctxt: dict, host: str, resources: dict, capabilities: dict, instances: list
    ) -> None:
        if self.store.report_host(host, resources, capabilities):
            LOG.info("New compute host %s: %s", host, resources)
            self.host_view.invalidate()
        with self._lock:
            if host in self._known_down:
                self._known_down.discard(host)
                LOG.info("Host %s is up again", host)
        self.store.set_power_states(host, {i["uuid"]: i["power_state"] for i in instances})

    @report_method
    def instance_update(
        self,
        ctxt: dict,
        host: str,
        uuid: str,
        vm_state: str,
        power_state: str | None = None,
        fault: str | None = None,
    ) -> None:
        if vm_state == "error":
            LOG.warning("Server %s failed on %s: %s", uuid, host, fault)
            fault = fault or "failed on %s" % host
            if not self.build.build_failed(uuid, host, fault):
                # NOTE: not a build: a server that was running failed.
                self.store.fail_instance(uuid, fault, expected_host=host)
                try:
                    record = self.store.get_instance(uuid, include_deleted=True)
                except exception.InstanceNotFound:
                    return
                self.notifier.error("instance.error", record)
            return
        # NOTE: fault is what this update says went wrong (an action that
        # failed while the server stays usable), and None clears the last one.
        reported = self.store.report_state(uuid, host, vm_state, fault, power_state)
        if reported is None:
            LOG.info("Ignoring update of %s from %s: unknown, deleted or elsewhere", uuid, host)
            return
        before, record, built = reported
        # NOTE: only changes are news: a repeated report (a resent build, a
        # reconcile) of the state the server is in says nothing new.
        event = "instance.create.end" if built else None
        if not built and before != vm_state:
            event = notifications.POWER_EVENTS.get(vm_state)
        if event:
            self.notifier.info(event, record)

    @report_method
    def set_host_enabled(self, ctxt: dict, host: str, enabled: bool, reason: str) -> None:
        # NOTE: an automatic change never overrides an operator (see the store).
        self.hosts.enable_host(host, enabled, reason, automatic=True)

    @report_method
    def instance_power_changed(self, ctxt: dict, host: str, uuid: str, power_state: str) -> None:
        vm_state = VM_STATE_OF_POWER[power_state]
        if self.store.power_changed(uuid, host, power_state, vm_state):
            LOG.info("Server %s is now %s (seen on %s)", uuid, power_state, host)
            self.notifier.info(notifications.POWER_EVENTS[vm_state], self.store.get_instance(uuid))

    @report_method
    def instance_deleted(self, ctxt: dict, host: str, uuid: str) -> None:
        networks = self.networks.networks_of_server(uuid)
        if self.store.finish_delete(uuid, host):
            LOG.info("Server %s deleted from %s", uuid, host)
            self.networks.fan_out(networks)
            self.notifier.info(
                "instance.delete.end", self.store.get_instance(uuid, include_deleted=True)
            )

    @report_method
    def host_instances(self, ctxt: dict, host: str) -> list:
        return self.store.list_instances(host=host)

    @report_method
    def host_networks(self, ctxt: dict, host: str) -> list[dict[str, Any]]:
        return self.networks.host_networks(host)

    # --- periodic --------------------------------------------------------------

    def check_hosts(self) -> None:
        """Log each host that went down since the last check."""
        if self.host_view.hearing is not None:
            self.host_view.hearing.check()
        for host in self.store.list_hosts(self._down_after):
            with self._lock:
                if host["state"] == "down" and host["name"] not in self._known_down:
                    self._known_down.add(host["name"])
                    LOG.warning(
                        "Host %s is down: no report since %s", host["name"], host["reported_at"]
                    )
