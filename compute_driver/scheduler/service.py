"""``compute-scheduler``: the scheduler service's entry point."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import oslo_messaging as messaging
from oslo_config import cfg
from sqlalchemy import exc as sa_exc

from compute_driver import config, exception, service
from compute_driver.rpc import compute_api, scheduler_api, transport
from compute_driver.scheduler import placement, recovery
from compute_driver.scheduler.manager import SchedulerManager, ensure_state_dirs
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
    """The scheduler: its store, its RPC server and its periodic checks."""

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
        self.periodic = service.Periodic(
            "check-hosts", conf.scheduler.periodic_interval, self.manager.check_hosts
        )

    def start(self) -> None:
        self.server.start(override_pool_size=self.conf.scheduler.rpc_workers)
        self.periodic.start()
        recovery.start(self)  # settles servers a stopped scheduler left in flight
        LOG.info("compute-scheduler listening on topic %s", scheduler_api.TOPIC)

    def stop(self) -> None:
        self.periodic.stop()
        self.server.stop()
        self.server.wait()
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
