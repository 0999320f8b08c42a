"""The decorator every RPC endpoint method wears, and what a request may cost.

:func:`rpc_method` checks the payload against the method's schema, then
what its API checks of every request (the sender's signature, the policy),
before the method runs, so a malformed or forged request changes nothing.
It answers our own errors as they are, and anything else as an
``internal_error`` naming the request.

What one request leaves behind is bounded, whoever sent it:

- in the log, a caller's mistake (a refused payload, an unknown method or
  version, a name not found) is one line with the request id; only an
  internal error has a traceback there;
- in the reply, an error is its class, its message (cut at
  :data:`MAX_TEXT` characters) and its keyword arguments: never a
  traceback, which would show our source paths and code to any client;
- any log record longer than :data:`MAX_LOG_RECORD` characters is cut
  (:class:`BoundedLogRecords`), whatever library wrote it.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any, cast

import oslo_messaging as messaging
from oslo_messaging.rpc import dispatcher as rpc_dispatcher

from compute_driver import exception
from compute_driver.rpc import schemas
from compute_driver.rpc.context import RequestContext

LOG = logging.getLogger(__name__)

#: Longest text about a request (a name, a message, a request id) that goes
#: into an error reply or a log line of ours.
MAX_TEXT = 500
#: Longest log record a service writes (a traceback comes on top of it).
MAX_LOG_RECORD = 4096
#: What an RPC method name and version look like; anything else is refused
#: before oslo.messaging looks for it.
METHOD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
VERSION = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?\Z")


def bounded(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as one printable line of at most about ``limit`` characters.

    Control characters are escaped (a newline in a name must not start a
    fake log line); longer text is cut, with a marker saying how long it was.
    """
    text = value if isinstance(value, str) else repr(value)
    cut = text[:limit]
    if not cut.isprintable():
        cut = cut.encode("unicode_escape").decode("ascii")[:limit]
    if len(text) > limit:
        return "%s... (%d characters)" % (cut, len(text))
    return cut


def request_id(ctxt: Any) -> str:
    """The request id a caller put in the RPC context, bounded for logs and replies."""
    if isinstance(ctxt, dict):
        value = ctxt.get("request_id")
    else:
        value = getattr(ctxt, "request_id", None)
    return bounded(value, 64) if value is not None else "?"


def reply_copy(error: exception.ComputeDriverError) -> exception.ComputeDriverError:
    """``error`` as a caller receives it: bounded, never raised, so with no traceback."""
    cls = type(error)
    # NOTE: an error a peer sent us (an agent's, forwarded by the scheduler)
    # is of oslo.messaging's <Class>_Remote subclass, whose str() is the
    # peer's whole reply, trace included: the copy is of the class itself.
    if cls.__name__.endswith("_Remote") and cls.__bases__[0].__name__ + "_Remote" == cls.__name__:
        cls = cls.__bases__[0]
    copy = cls.__new__(cls)
    kwargs = {
        key: value
        if isinstance(value, (int, float, bool, type(None)))
        else bounded(value if isinstance(value, str) else str(value))
        for key, value in error.kwargs.items()
    }
    exception.ComputeDriverError.__init__(copy, bounded(error.message), **kwargs)
    return copy


def refusal(error: exception.ComputeDriverError, ctxt: Any = None) -> messaging.ExpectedException:
    """What an endpoint raises to answer ``error`` without a traceback, here or there.

    NOTE: oslo.messaging replies with ``traceback.format_exception`` of the
    exception info it is given (``serialize_remote_exception``): with the
    exception's own traceback, every client would read our file paths and
    code. A fresh copy that was never raised has no traceback and no chained
    cause, so the reply holds its message only.

    The copy's ``str()``, which oslo.messaging sends as the failure's
    message (what a client of plain oslo.messaging reads as
    ``RemoteError.value``), is its ``wire_text``: JSON with the code and
    ``ctxt``'s request id. Our clients rebuild the class from its ``args``
    and ``kwargs``, which hold the plain message.
    """
    expected = messaging.ExpectedException()
    sent = reply_copy(error)
    sent._wire = sent.wire_text(request_id(ctxt))
    expected.exc_info = (type(sent), sent, None)
    # Who catches the wrapper in-process (tests, the embedded cloud) finds
    # the error where ``raise ... from`` would have put it.
    expected.__cause__ = reply_copy(error)
    return expected


def _log_refusal(method: str, ctxt: Any, error: exception.ComputeDriverError) -> None:
    # A caller's mistake (invalid, not found, conflict) is routine; a typed
    # failure (storage, hypervisor) deserves a warning, still on one line.
    level = logging.WARNING if error.kind == "failed" else logging.INFO
    LOG.log(level, "%s refused (request %s): %s", method, request_id(ctxt), bounded(error.message))


#: What an endpoint checks of a request before the method runs (its sender's
#: signature, its policy): called as ``check(endpoint, context, method, payload)``
#: with the payload as sent, ``signature`` included; raises to refuse.
Check = Callable[[Any, RequestContext, str, dict[str, Any]], None]


def rpc_method(
    api: str, methods: dict[str, dict[str, Any]], check: Check | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Expose a method over RPC with the schema ``methods[name]``.

    The one decorator of every endpoint method, agent and scheduler alike:
    the context is made typed, the payload is checked against its schema,
    then ``check`` runs (if given) and the payload's ``signature``, the
    envelope's, is dropped before the method runs.

    :param api: the API's name, as errors and logs name its methods (``compute``).
    :param methods: the API's method schemas by name (``schemas.COMPUTE_METHODS``).
    :param check: what the API checks of every request after its schema
        (``check(endpoint, context, method, payload)``; raises to refuse).
    """

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        name = func.__name__
        schema = methods[name]
        method = "%s.%s" % (api, name)

        @functools.wraps(func)
        # NOTE: positional-only, so that payload fields named "self" or
        # "ctxt" reach the schema check (and are refused there) instead of
        # colliding with these parameters.
        def wrapper(self: Any, ctxt: dict[str, Any], /, **kwargs: Any) -> Any:
            try:
                # NOTE: methods get a typed, checked context, never the raw dict.
                context = RequestContext.from_wire(ctxt)
                schemas.validate(api, name, schema, kwargs)
                if check is not None:
                    check(self, context, name, kwargs)
                    # NOTE: the signature is the envelope's, checked; never the method's.
                    kwargs.pop("signature", None)
                return func(self, context, **kwargs)
            except exception.ComputeDriverError as exc:
                error, ours = exc, True
            except Exception:
                # NOTE: the caller gets a typed error that names the request;
                # the traceback stays in this service's log.
                LOG.exception("%s failed (request %s)", method, request_id(ctxt))
                error = exception.InternalError(method=method, request_id=request_id(ctxt))
                ours = False
            # NOTE: logged and raised outside the except clauses: oslo.log
            # appends the active exception to warnings (its error summary).
            if ours:
                _log_refusal(method, ctxt, error)
            raise refusal(error, ctxt)

        # NOTE: oslo.messaging ships no type hints; expose() returns the function.
        return cast(Callable[..., Any], messaging.expose(wrapper))

    return decorator


class Dispatcher(rpc_dispatcher.RPCDispatcher):  # type: ignore[misc]  # untyped base
    """oslo.messaging's RPC dispatcher, answering what no endpoint serves with a typed error.

    NOTE: oslo.messaging's own answer to an unknown method or version, or a
    malformed envelope, is a traceback in our log and in the reply, each
    carrying the method name whole: one call named with 10 MB wrote 21 MB
    to the log and sent as much back. Here the envelope is checked first and
    refused like any caller's mistake: one line, a bounded typed error.
    """

    def __init__(self, api: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.api = api

    def _check_envelope(self, message: dict[str, Any]) -> exception.ComputeDriverError | None:
        method = message.get("method")
        version = message.get("version", "1.0")
        if not isinstance(method, str) or not METHOD_NAME.match(method):
            return exception.UnknownMethod(api=self.api, method=bounded(method, 80))
        if not isinstance(version, str) or not VERSION.match(version):
            return exception.InvalidVersion(version=bounded(version, 20), api=self.api)
        if not isinstance(message.get("args", {}), dict):
            return exception.InvalidPayload(
                method="%s.%s" % (self.api, method), reason="the arguments are not an object"
            )
        return None

    def dispatch(self, incoming: Any) -> Any:
        message = incoming.message
        error = self._check_envelope(message)
        if error is None:
            try:
                return super().dispatch(incoming)
            except rpc_dispatcher.NoSuchMethod:
                error = exception.UnknownMethod(api=self.api, method=message["method"])
            except rpc_dispatcher.UnsupportedVersion:
                error = exception.UnsupportedVersion(
                    version=message.get("version", "1.0"),
                    api=self.api,
                    reason="no endpoint of this service serves it (namespace %s)"
                    % bounded(message.get("namespace"), 40),
                )
            except messaging.ExpectedException:
                raise
            except Exception:
                # NOTE: a method no rpc_method wraps: oslo.messaging would
                # reply with the traceback. It stays in this log, with the id.
                name = "%s.%s" % (self.api, message["method"])
                LOG.exception("%s failed (request %s)", name, request_id(incoming.ctxt))
                raise refusal(
                    exception.InternalError(method=name, request_id=request_id(incoming.ctxt)),
                    incoming.ctxt,
                ) from None
        LOG.warning("%s (request %s)", error.message, request_id(incoming.ctxt))
        raise refusal(error, incoming.ctxt)


#: What oslo.messaging's rabbit driver logs, with the exception, for a
#: message it cannot decode or dispatch.
_UNDECODABLE = "Failed to process message ... skipping it."


class BoundedLogRecords(logging.Filter):
    """A handler filter that cuts every log record to :data:`MAX_LOG_RECORD`
    characters, and makes the driver's report of an undecodable message one line.

    NOTE: oslo.messaging logs what a caller sent at debug level (the method
    name of every message, a malformed timeout value) before any code of
    ours sees it; a filter on the service's log handlers bounds those too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.msg == _UNDECODABLE:
            # NOTE: the rabbit driver could not decode a message (no JSON,
            # JSON nested past the recursion limit): the sender's mistake,
            # caught before any code of ours. One line, not a traceback.
            error = record.exc_info[1]
            record.msg = "%s (%s: %s)"
            record.args = (_UNDECODABLE, type(error).__name__, repr(str(error)[:200]))
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        message = record.getMessage()
        if len(message) > MAX_LOG_RECORD:
            record.msg = "%s... (cut: %d characters)" % (message[:MAX_LOG_RECORD], len(message))
            record.args = None
        return True


def bound_log_records(logger: logging.Logger | None = None) -> None:
    """Put :class:`BoundedLogRecords` on every handler of ``logger`` (default: the root)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, BoundedLogRecords) for f in handler.filters):
            handler.addFilter(BoundedLogRecords())
