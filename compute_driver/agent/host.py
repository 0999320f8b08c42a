"""The agent's host object: what every endpoint of the compute API receives.

One :class:`AgentHost` per agent holds what the endpoints share: the
configuration, the virt driver, the storage backends
(:class:`~compute_driver.agent.storage.HostStorage`), the network plugins
(:class:`~compute_driver.agent.networks.HostNetworks`), the per-instance
locks, the scheduler's reports client and the key requests are signed with.
The endpoints (``manager``, ``volumes``, ``ports``) each receive it and
never each other: what two of them need belongs here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from compute_driver.agent.networks import HostNetworks
from compute_driver.agent.storage import HostStorage
from compute_driver.rpc import report_signing, schemas
from compute_driver.rpc.agent_reports_api import AgentReportsAPI
from compute_driver.rpc.context import RequestContext
from compute_driver.rpc.endpoint import rpc_method
from compute_driver.virt.base import ComputeDriver
from network_plugins import base as net_base
from storage_backends import base as storage_base

API = "compute"


class AgentHost:
    """This host as the compute API's endpoints see it.

    :param conf: the agent's configuration.
    :param driver: the virt driver (its host initialised).
    :param storage: the storage backends by name (``[storage] backends``).
    :param networks: the network plugins by name (``[agent] network_plugins``).
    :param scheduler: the client of the scheduler's reports API.
    :param reconcile_scheduler: the client for the start-up calls (a shorter
        timeout, retried); ``scheduler`` when None.
    """

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        driver: ComputeDriver,
        storage: Mapping[str, storage_base.StorageBackend],
        networks: Mapping[str, net_base.NetworkPlugin],
        scheduler: AgentReportsAPI,
        reconcile_scheduler: AgentReportsAPI | None = None,
    ) -> None:
        self.conf = conf
        #: This host's name (``[DEFAULT] host``), as the scheduler knows it.
        self.name: str = conf.host
        self.driver = driver
        self.storage = HostStorage(storage, conf.storage.root_backend)
        self.networks = HostNetworks(networks, conf.agent.network_plugins)
        self.scheduler = scheduler
        self.reconcile_scheduler = reconcile_scheduler or scheduler
        #: The key the scheduler signs requests to this host with (None: unsigned).
        self.request_key: str | None = report_signing.configured_key(conf)
        # NOTE: one lock per instance UUID, never one lock across libvirt
        # calls for the whole host: a slow build must not block others.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def instance_lock(self, uuid: str) -> threading.Lock:
        """The lock of instance ``uuid``: held by whatever changes its guest."""
        with self._locks_guard:
            return self._locks.setdefault(uuid, threading.Lock())

    def forget_instance_lock(self, uuid: str) -> None:
        """Drop the lock of ``uuid`` (its server is deleted)."""
        with self._locks_guard:
            self._locks.pop(uuid, None)

    def verify_request(self, method: str, payload: dict[str, Any]) -> None:
        """Check that the scheduler signed ``payload`` of ``method`` for this host
        (nothing to check when this host has no key).

        :raises RequestRefused: the signature is missing, stale, or another's.
        """
        if self.request_key is not None:
            report_signing.verify_request(self.request_key, self.name, method, payload)


def _signed_by_scheduler(
    endpoint: Any, context: RequestContext, method: str, payload: dict[str, Any]
) -> None:
    # NOTE: every endpoint of the compute API holds the host object, and the host the key.
    endpoint.host.verify_request(method, payload)


#: The decorator every method of the compute API wears: the payload's schema,
#: then, when this host has a key (``[agent_reports] key``), the scheduler's
#: signature (compute_driver/rpc/report_signing.py), before the method runs: a
#: request another agent (or anyone else) put into this host's queue changes nothing.
compute_method = rpc_method(API, schemas.COMPUTE_METHODS, check=_signed_by_scheduler)
