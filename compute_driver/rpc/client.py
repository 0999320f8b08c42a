"""The base of our thin per-service RPC client classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import kombu.exceptions
import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver import exception
from compute_driver.rpc import schemas, transport
from compute_driver.rpc.context import RequestContext

#: Signs one outgoing request: (method, wire context, payload, host) -> the
#: payload as sent, with its ``signature`` (see rpc/report_signing.py).
Signer = Callable[[str, dict[str, Any], dict[str, Any], str | None], dict[str, Any]]


def present(**fields: Any) -> dict[str, Any]:
    """A payload of the ``fields`` that are not None: an optional argument
    left unset is left out of the message (the schemas never take null)."""
    return {key: value for key, value in fields.items() if value is not None}


class RPCClientBase:
    """Wraps an oslo.messaging RPCClient for one versioned API.

    Subclasses set ``TOPIC``, ``API_VERSION`` (the newest this code speaks),
    ``CAP_OPTION`` (the ``[upgrade_levels]`` option that caps it), and
    ``METHODS`` and ``CASTS`` (the API's schemas and which methods are
    casts), and give one Python method per remote method, each sending
    through :meth:`_request`; a client whose requests are signed sets
    ``signer``.
    """

    TOPIC = ""
    API_VERSION = "1.0"
    CAP_OPTION = ""
    METHODS: ClassVar[dict[str, dict[str, Any]]] = {}
    CASTS: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        conf: cfg.ConfigOpts = cfg.CONF,
        timeout: int | None = None,
        context: RequestContext | None = None,
    ) -> None:
        """:param context: who the calls come from (a fresh request id each
        call); by default a caller of no project, which only a service is."""
        self.conf = conf
        self.identity = context or RequestContext()
        cap = getattr(conf.upgrade_levels, self.CAP_OPTION) or self.API_VERSION
        target = messaging.Target(topic=self.TOPIC, version=self.API_VERSION)
        self.timeout = timeout if timeout is not None else conf.rpc.call_timeout
        self.retries = conf.rpc.connection_retries
        self._broker_checked = False
        #: Signs every request (None: sent unsigned); the one signing hook.
        self.signer: Signer | None = None
        self._client = messaging.get_rpc_client(
            transport.get_transport(conf), target, version_cap=cap, timeout=self.timeout
        )

    def _context(self) -> dict[str, Any]:
        """The wire context of one call: this client's identity, a new request id."""
        return self.identity.for_request().to_wire()

    def _outgoing(
        self,
        method: str,
        context: dict[str, Any],
        payload: dict[str, Any],
        host: str | None = None,
    ) -> dict[str, Any]:
        """``payload`` as sent: with this client's signature, if it signs
        (over the method, the payload, and the context or the host as its
        :attr:`signer` chooses)."""
        if self.signer is None:
            return payload
        return self.signer(method, context, payload, host)

    def _request(
        self,
        method: str,
        payload: dict[str, Any],
        host: str | None = None,
        version: str = "1.0",
        timeout: int | None = None,
    ) -> Any:
        """Send ``method``: checked against its schema, then cast or called.

        :raises InvalidPayload: ``payload`` does not match the schema; nothing is sent.
        """
        # NOTE: checked here too, not only on arrival: a caller's mistake is
        # a typed error at the call site, and never costs a round trip.
        schemas.validate(self.TOPIC, method, self.METHODS[method], payload)
        if method in self.CASTS:
            self._cast(method, payload, host=host, version=version)
            return None
        return self._call(method, payload, host=host, version=version, timeout=timeout)

    # NOTE: the payload is a dict, not **kwargs: payload fields such as
    # "server" must never be mistaken for the routing arguments.
    def _call(
        self,
        method: str,
        payload: dict[str, Any],
        host: str | None = None,
        version: str = "1.0",
        timeout: int | None = None,
    ) -> Any:
        if not self._broker_checked:
            transport.check_broker(self.conf, self.retries)
            self._broker_checked = True
        wait = timeout or self.timeout
        try:
            prepared = self._client.prepare(
                server=host, version=version, retry=self.retries, timeout=wait
            )
            context = self._context()
            return prepared.call(context, method, **self._outgoing(method, context, payload, host))
        except messaging.MessagingTimeout as exc:
            raise exception.MessagingTimeout(service=self._service(host), timeout=wait) from exc
        except messaging.RemoteError as exc:
            # Not one of our errors (an older peer, or a dispatcher error such
            # as an unknown method): still one typed error for the caller.
            raise exception.MessagingError(
                service=self._service(host), reason="%s: %s" % (exc.exc_type, exc.value)
            ) from exc
        except (messaging.MessagingException, kombu.exceptions.OperationalError) as exc:
            raise exception.MessagingError(service=self._service(host), reason=str(exc)) from exc

    def _service(self, host: str | None) -> str:
        return "%s%s" % (self.TOPIC, "." + host if host else "")

    def _cast(
        self, method: str, payload: dict[str, Any], host: str | None = None, version: str = "1.0"
    ) -> None:
        prepared = self._client.prepare(server=host, version=version, retry=self.retries)
        context = self._context()
        try:
            prepared.cast(context, method, **self._outgoing(method, context, payload, host))
        # NOTE: with the broker down after [rpc] connection_retries, the
        # rabbit driver lets kombu's own error through, not oslo's.
        except (messaging.MessagingException, kombu.exceptions.OperationalError) as exc:
            raise exception.MessagingError(service=self._service(host), reason=str(exc)) from exc
