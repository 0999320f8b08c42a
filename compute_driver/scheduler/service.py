"""``compute-scheduler``: the scheduler service's entry point."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg
from sqlalchemy import exc as sa_exc

from compute_driver import config, disk_image, exception, notifications, service
from compute_driver.rpc import agent_reports_api, compute_api, scheduler_api, transport
from compute_driver.scheduler import placement, recovery
from compute_driver.scheduler.aggregates import AggregateManager
from compute_driver.scheduler.build import BuildPath
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.flavors import FlavorEndpoint
from compute_driver.scheduler.host_view import Hearing, HostView
from compute_driver.scheduler.hosts import HostEndpoint
from compute_driver.scheduler.images import ImageEndpoint
from compute_driver.scheduler.imagestore import ImageStore
from compute_driver.scheduler.networks import NetworkManager
from compute_driver.scheduler.reports import ReportEndpoint
from compute_driver.scheduler.servers import ServerEndpoint
from compute_driver.scheduler.store import Store
from compute_driver.scheduler.volumes import VolumeManager

LOG = logging.getLogger(__name__)


def open_store(conf: cfg.ConfigOpts, upgrade: bool = True) -> Store:
    """The store at ``[database] connection``, migrated to the newest schema.

    :param upgrade: False: only check the URL (no connection is made).
    :raises InvalidConfig: the URL is malformed, names an unknown driver, or
        a SQLite file in a directory that does not exist.
    :raises DatabaseUnavailable: the database cannot be reached or migrated.
    """
    where = config.option_location(conf, "database", "connection")
    try:
        store = Store(Database(conf.database.connection, conf.database.busy_timeout))
        if upgrade:
            store.db.upgrade()
    except exception.InvalidConfig as exc:
        raise exception.InvalidConfig(
            reason="%s: [database] connection is invalid: %s" % (where, exc)
        ) from exc
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
        raise exception.InvalidConfig(
            reason="%s: [database] connection is invalid: %s" % (where, exc)
        ) from exc
    except (sa_exc.SQLAlchemyError, OSError) as exc:
        raise exception.DatabaseUnavailable(reason=str(exc).splitlines()[0]) from exc
    return store


def ensure_state_dirs(conf: cfg.ConfigOpts) -> None:
    """Create the scheduler's directories, missing ones only.

    The state and image store directories are 0711: QEMU (another user)
    must traverse them to the kernels that libvirt labels for it, but only
    the services list or read them. The import directory is the
    operator's, 0700 when made here.
    """
    for path, mode in (
        (conf.state_path, 0o711),
        (conf.image.store_path, 0o711),
        (conf.image.import_path, 0o700),
    ):
        if not os.path.isdir(path):
            os.makedirs(path, mode=mode, exist_ok=True)
            os.chmod(path, mode)
    # NOTE: the store is ours alone: one left 0755 by an older release is closed too.
    os.chmod(conf.image.store_path, 0o711)


#: Seconds a stopping scheduler waits for its queued notifications to go.
NOTIFICATIONS_FLUSH_TIMEOUT = 5


class Scheduler:
    """The scheduler's parts, wired together over one store and one compute API.

    The endpoints of topic ``scheduler`` (one per area), the endpoint of
    topic ``agent_reports``, and what they share: the host view, the build
    path and the notifier. Each part receives the parts it uses.
    """

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        store: Store,
        compute: compute_api.ComputeAPI,
        notifier: notifications.Notifier | None = None,
    ) -> None:
        """:param notifier: None: the one ``[notifications]`` configures."""
        self.conf = conf
        self.store = store
        self.compute = compute
        #: Flavors and images, around the store's database.
        self.catalog = Catalog(store.db)
        self.notifier = notifier or notifications.Notifier(conf, "compute-scheduler:%s" % conf.host)
        self.volumes = VolumeManager(conf, store, self.catalog, compute)
        self.networks = NetworkManager(conf, store, compute)
        #: The hosts as placement sees them (see host_view.py).
        self.host_view = HostView(
            lambda: self.aggregates.annotate(store.list_hosts(conf.scheduler.service_down_time)),
            conf.scheduler.host_view_ttl,
            hearing=Hearing.from_conf(conf),
        )
        self.aggregates = AggregateManager(conf, store.db, on_change=self.host_view.invalidate)
        self.build = BuildPath(
            conf,
            store,
            self.catalog,
            compute,
            self.volumes,
            self.networks,
            self.aggregates,
            self.host_view,
            self.notifier,
        )
        self.servers = ServerEndpoint(
            conf, store, self.catalog, compute, self.build, self.networks, self.notifier
        )
        self.hosts = HostEndpoint(conf, store, self.aggregates, self.host_view)
        self.flavors = FlavorEndpoint(conf, self.catalog)
        self.images = ImageEndpoint(conf, store, self.catalog, compute, image_store(conf))
        self.reports = ReportEndpoint(
            conf,
            store,
            self.hosts,
            self.build,
            self.networks,
            self.host_view,
            self.notifier,
        )

    @property
    def endpoints(self) -> list[Any]:
        """The endpoints of topic ``scheduler``, one per area."""
        return [
            self.servers,
            self.hosts,
            self.flavors,
            self.images,
            self.volumes,
            self.networks,
            self.aggregates,
        ]


def image_store(conf: cfg.ConfigOpts) -> ImageStore:
    """The image files at ``[image] store_path``, with the configured limits."""
    return ImageStore(
        conf.image.store_path,
        conf.image.import_path,
        disk_image.Limits(
            max_bytes=conf.image.max_image_gb * 1024**3,
            max_virtual_bytes=conf.image.max_virtual_gb * 1024**3,
            vmdk_types=tuple(conf.image.vmdk_allowed_types),
        ),
    )


class SchedulerService:
    """The scheduler: its store, its two RPC servers and its periodic checks.

    NOTE: two servers, two topics: the public scheduler API, which any
    client credential may call, and the agent reports, which the broker
    lets only agents publish (tools/rabbitmq-users.sh).
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        ensure_state_dirs(conf)
        self.store = open_store(conf)
        self.scheduler = Scheduler(conf, self.store, compute_api.ComputeAPI(conf))
        target = messaging.Target(topic=scheduler_api.TOPIC, server=conf.host)
        self.server = transport.get_server(conf, target, self.scheduler.endpoints)
        self.reports = self.scheduler.reports
        self.report_server = transport.get_server(
            conf,
            messaging.Target(topic=agent_reports_api.TOPIC, server=conf.host),
            [self.reports],
        )
        self.periodic = service.Periodic(
            "check-hosts", conf.scheduler.periodic_interval, self.reports.check_hosts
        )

    def start(self) -> None:
        if self.reports.secret is None:
            LOG.warning(
                "[agent_reports] secret is not set: reports and public calls are "
                "accepted unsigned, so an agent's credential can report for any host "
                "and call the public API as an admin"
            )
        self.server.start(override_pool_size=self.conf.scheduler.rpc_workers)
        self.report_server.start(override_pool_size=self.conf.scheduler.rpc_workers)
        self.periodic.start()
        recovery.start(self)  # settles servers a stopped scheduler left in flight
        LOG.info(
            "compute-scheduler listening on topics %s and %s",
            scheduler_api.TOPIC,
            agent_reports_api.TOPIC,
        )

    def stop(self) -> None:
        self.periodic.stop()
        for server in (self.server, self.report_server):
            server.stop()
        for server in (self.server, self.report_server):
            server.wait()
        # NOTE: what the last requests notified, if the broker takes it soon;
        # a broker that is away does not hold up the stop for longer.
        if not self.scheduler.notifier.flush(NOTIFICATIONS_FLUSH_TIMEOUT):
            LOG.warning("Stopping with notifications not sent (the broker is away)")
        self.store.db.engine.dispose()


def check_config(conf: cfg.ConfigOpts) -> None:
    """What the scheduler alone reads, checked at start rather than at the first request.

    :raises InvalidConfig: an unknown filter or weigher name, or a database
        URL that is malformed or names a missing directory.
    """
    placement.Placement(conf)
    open_store(conf, upgrade=False).db.engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    service.run("compute-scheduler", argv, SchedulerService, checks=(check_config,))
