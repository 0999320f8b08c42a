"""The decorator every method of the agent's compute API wears.

It checks the payload against the method's schema (``rpc_method``), then,
when this host has a key (``[agent_reports] key``), that the scheduler
signed the request with it (compute_driver/rpc/report_signing.py), before
the method runs: a request another agent (or anyone else) put into this
host's queue changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from compute_driver.rpc import report_signing, schemas
from compute_driver.rpc.endpoint import rpc_method

API = "compute"


def compute_method(func: Callable) -> Callable:
    """Expose ``func`` as a compute method: schema, then the scheduler's signature."""

    @functools.wraps(func)
    def signed(self: Any, ctxt: dict, /, **kwargs: Any) -> Any:
        # NOTE: the volume and port endpoints hold the manager; it holds the key.
        manager = getattr(self, "manager", self)
        if manager.request_key is not None:
            report_signing.verify_request(manager.request_key, manager.host, func.__name__, kwargs)
        kwargs.pop("signature", None)
        return func(self, ctxt, **kwargs)

    return rpc_method(API, schemas.COMPUTE_METHODS)(signed)
