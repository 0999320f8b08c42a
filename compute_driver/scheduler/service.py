"""``compute-scheduler``: the scheduler service's entry point."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import oslo_messaging as messaging
from oslo_config import cfg
from sqlalchemy import exc as sa_exc

from compute_driver import config, exception, service
from compute_driver.rpc import agent_reports_api, compute_api, scheduler_api, transport
from compute_driver.scheduler import placement, recovery
from compute_driver.scheduler.manager import SchedulerManager, ensure_state_dirs
from compute_driver.scheduler.reports import ReportEndpoint
from compute_driver.scheduler.store import Store

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
        store = Store(conf.database.connection, conf.database.busy_timeout)
        if upgrade:
            store.upgrade()
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
        self.manager = SchedulerManager(conf, self.store, compute_api.ComputeAPI(conf))
        target = messaging.Target(topic=scheduler_api.TOPIC, server=conf.host)
        self.server = transport.get_server(
            conf,
            target,
            [
                self.manager,
                self.manager.volumes,
                self.manager.networks,
                self.manager.aggregates,
            ],
        )
        self.reports = ReportEndpoint(self.manager)
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
        self.store.engine.dispose()


def check_config(conf: cfg.ConfigOpts) -> None:
    """What the scheduler alone reads, checked at start rather than at the first request.

    :raises InvalidConfig: an unknown filter or weigher name, or a database
        URL that is malformed or names a missing directory.
    """
    placement.Placement(conf)
    open_store(conf, upgrade=False).engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    service.run("compute-scheduler", argv, SchedulerService, checks=(check_config,))
