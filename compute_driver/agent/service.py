"""``compute-agent``: the compute agent's entry point."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver import exception, plugins, service
from compute_driver.agent.host import AgentHost
from compute_driver.agent.manager import ComputeManager
from compute_driver.agent.ports import PortEndpoint
from compute_driver.agent.volumes import VolumeEndpoint
from compute_driver.rpc import compute_api, transport
from compute_driver.rpc.agent_reports_api import AgentReportsAPI
from storage_backends import base as storage_base

LOG = logging.getLogger(__name__)

#: Seconds the start-up reconcile call waits before it retries.
RECONCILE_CALL_TIMEOUT = 10
#: Seconds between two tries of a report the bus refused.
REPORT_RETRY_DELAY = 1.0


def load_plugins(conf: cfg.ConfigOpts) -> tuple:
    """(driver, storage backends by name, network plugins by name).

    :raises InvalidConfig: a plugin name is unknown or inconsistent.
    """
    driver = plugins.load(
        plugins.VIRT_NAMESPACE, conf.agent.virt_driver, conf, "agent", "virt_driver"
    )
    # NOTE: a backend reads only its own group; what it needs of the host
    # (the libvirt connection, for secrets) is lent explicitly.
    host = getattr(driver, "host", None)
    services = storage_base.Services(hypervisor=host.get_connection if host else None)
    storage = {
        name: plugins.load(
            plugins.STORAGE_NAMESPACE, name, conf, "storage", "backends", services=services
        )
        for name in conf.storage.backends
    }
    if conf.storage.root_backend not in storage:
        raise exception.InvalidConfig(
            reason="[storage] root_backend = %r is not one of [storage] backends (%s)"
            % (conf.storage.root_backend, ", ".join(conf.storage.backends))
        )
    networks = {
        name: plugins.load(plugins.NETWORK_NAMESPACE, name, conf, "agent", "network_plugins")
        for name in conf.agent.network_plugins
    }
    return driver, storage, networks


def report_until_sent(
    report: Callable[[], None], stopped: threading.Event, delay: float = REPORT_RETRY_DELAY
) -> None:
    """Send one report, trying again every ``delay`` s while the bus refuses it.

    NOTE: so the first report after the broker returns leaves at once, not
    one report interval later: after an outage longer than the scheduler's
    service_down_time, the scheduler refused every create "host down" until
    each agent's next periodic report. Said once per outage, in one line.
    """
    failures = 0
    while not stopped.is_set():
        try:
            report()
        except exception.MessagingError as exc:
            if failures == 0:
                LOG.warning("Cannot report to the scheduler: %s; trying again until it works", exc)
            failures += 1
            stopped.wait(delay)
            continue
        except exception.ComputeDriverError as exc:
            # e.g. the hypervisor is away: the next period tries again.
            LOG.warning("Cannot report this host: %s", exc)
            return
        if failures:
            LOG.warning("Reported to the scheduler again after %d failed tries", failures)
        return


def check_storage(storage: dict) -> None:
    """Each storage backend answers (a Ceph monitor, an iSCSI portal, a mount).

    NOTE: otherwise an agent whose storage is unreachable starts and only
    logs failed reports; said once at start, with systemd restarting us
    until the storage is back.

    :raises StorageError: naming the backend and why.
    """
    for name, backend in sorted(storage.items()):
        try:
            backend.capacity()
        except exception.ComputeDriverError as exc:
            raise exception.StorageError(
                operation="check at start", volume="backend %s" % name, reason=exc.message
            ) from exc


class AgentService:
    """The agent: plugins, its RPC servers (per-host and fanout) and its report loop."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        driver, storage, networks = load_plugins(conf)
        check_storage(storage)
        driver.init_host(conf.host)
        self.host = AgentHost(
            conf,
            driver,
            storage,
            networks,
            AgentReportsAPI(conf),
            AgentReportsAPI(conf, timeout=RECONCILE_CALL_TIMEOUT),
        )
        self.manager = ComputeManager(self.host)
        self.driver = driver
        driver.register_event_callback(self.manager.handle_virt_event)
        driver.register_host_state_callback(self.manager.handle_host_state)
        target = messaging.Target(topic=compute_api.TOPIC, server=conf.host)
        self.server = transport.get_server(
            conf,
            target,
            [self.manager, VolumeEndpoint(self.host), PortEndpoint(self.host)],
        )
        self.reporter = service.Periodic("report", conf.agent.report_interval, self.report)
        # NOTE: as often as reports: a switch daemon that restarted loses
        # every flow, and guests are cut off until they are back.
        self.network_checker = service.Periodic(
            "network-resync", conf.agent.report_interval, self.resync_networks
        )
        interval = conf.agent.image_cache_cleanup_interval
        self.cache_cleaner = (
            service.Periodic("image-cache", interval, self.clean_image_caches) if interval else None
        )

    def report(self) -> None:
        """The periodic report, retried while the bus refuses it."""
        report_until_sent(self.manager.report, self.reporter.stopped)

    def resync_networks(self) -> None:
        """Let each network plugin that can reprogram what its datapath lost."""
        for name, plugin in sorted(self.host.networks.items()):
            if not plugin.describe().resync:
                continue
            try:
                if plugin.check_and_resync():
                    LOG.warning("Network plugin %s reprogrammed its datapath", name)
            except exception.ComputeDriverError as exc:
                LOG.warning("Network plugin %s cannot check its datapath: %s", name, exc)

    def clean_image_caches(self) -> None:
        """Remove cached images nothing backs onto, on every backend that caches."""
        for name, backend in sorted(self.host.storage.items()):
            if not backend.describe().image_cache:
                continue
            try:
                removed = backend.cleanup_image_cache()
            except exception.ComputeDriverError as exc:
                LOG.warning("Image cache cleanup of %s failed: %s", name, exc)
                continue
            if removed:
                LOG.info("Image cache of %s: removed %s", name, ", ".join(removed))

    def start(self) -> None:
        if self.host.request_key is None:
            LOG.warning(
                "[agent_reports] key is not set: reports go unsigned and requests are "
                "not checked, so another agent's credential can command this host"
            )
        self.driver.start_events()
        self.server.start(override_pool_size=self.conf.agent.rpc_workers)
        self.reporter.start()
        self.network_checker.start()
        if self.cache_cleaner is not None:
            self.cache_cleaner.start()
        # NOTE: the scheduler may start after us (its queue does not exist
        # yet and our call would wait for nothing), so reconciling retries in
        # the background instead of holding up the start.
        threading.Thread(target=self._reconcile_until_done, name="reconcile", daemon=True).start()
        LOG.info("compute-agent %s listening on topic %s", self.conf.host, compute_api.TOPIC)

    def _reconcile_until_done(self) -> None:
        delay = 1.0
        while not self.reporter.stopped.is_set():
            try:
                self.manager.reconcile()
                return
            except exception.ComputeDriverError as exc:
                LOG.warning(
                    "Cannot reconcile with the scheduler yet (%s); retrying in %.0f s", exc, delay
                )
            self.reporter.stopped.wait(delay)
            delay = min(delay * 2, 60.0)

    def stop(self) -> None:
        self.driver.stop_events()
        self.reporter.stop()
        self.network_checker.stop()
        if self.cache_cleaner is not None:
            self.cache_cleaner.stop()
        self.server.stop()
        self.server.wait()


def main(argv: Sequence[str] | None = None) -> None:
    service.run("compute-agent", argv, AgentService)
