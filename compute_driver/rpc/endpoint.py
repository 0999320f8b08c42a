"""The decorator every RPC endpoint method wears.

It checks the payload against the method's schema before the method runs,
so a malformed request changes nothing, and it marks our own errors as
expected, so the server does not log a traceback for a caller's mistake
while the caller still receives the typed error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import oslo_messaging as messaging

from compute_driver import exception
from compute_driver.rpc import schemas
from compute_driver.rpc.context import RequestContext

LOG = logging.getLogger(__name__)


def rpc_method(api: str, methods: dict[str, dict[str, Any]]) -> Callable:
    """Expose a method over RPC with the schema ``methods[name]``."""

    def decorator(func: Callable) -> Callable:
        schema = methods[func.__name__]

        @messaging.expose
        @functools.wraps(func)
        # NOTE: positional-only, so that payload fields named "self" or
        # "ctxt" reach the schema check (and are refused there) instead of
        # colliding with these parameters.
        def wrapper(self: Any, ctxt: dict, /, **kwargs: Any) -> Any:
            try:
                # NOTE: methods get a typed, checked context, never the raw dict.
                context = RequestContext.from_wire(ctxt)
                schemas.validate(api, func.__name__, schema, kwargs)
                return func(self, context, **kwargs)
            except exception.ComputeDriverError as exc:
                LOG.info("%s.%s refused: %s", api, func.__name__, exc)
                raise messaging.ExpectedException() from exc
            except Exception:
                # NOTE: the caller gets a typed error that names the request;
                # the traceback stays in this service's log.
                request_id = (ctxt or {}).get("request_id", "?")
                LOG.exception("%s.%s failed (request %s)", api, func.__name__, request_id)
                try:
                    raise exception.InternalError(
                        method="%s.%s" % (api, func.__name__), request_id=request_id
                    ) from None
                except exception.InternalError:
                    raise messaging.ExpectedException() from None

        return wrapper

    return decorator
