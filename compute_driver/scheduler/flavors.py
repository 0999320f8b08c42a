"""The flavor methods of the scheduler API 1.0: list, create, delete."""

from __future__ import annotations

import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.scope import scheduler_method


class FlavorEndpoint:
    """Serves the flavor methods of topic ``scheduler``."""

    target = messaging.Target(version="1.0")

    def __init__(self, conf: cfg.ConfigOpts, catalog: Catalog) -> None:
        self.conf = conf
        self.catalog = catalog

    @scheduler_method
    def list_flavors(self, context: RequestContext) -> list:
        return self.catalog.list_flavors()

    @scheduler_method
    def create_flavor(
        self,
        context: RequestContext,
        name: str,
        vcpus: int,
        memory_mb: int,
        root_gb: int,
        extra_specs: dict[str, str] | None = None,
    ) -> dict:
        return self.catalog.create_flavor(name, vcpus, memory_mb, root_gb, extra_specs)

    @scheduler_method
    def delete_flavor(self, context: RequestContext, flavor: str) -> None:
        self.catalog.delete_flavor(flavor)
