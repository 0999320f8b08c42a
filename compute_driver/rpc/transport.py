"""oslo.messaging plumbing shared by every service and client.

One place decides how we talk to the bus: the exchange, which exception
modules may be rebuilt from remote errors, and the threading executor
(eventlet is deprecated; we never monkey-patch).
"""

from __future__ import annotations

import ssl
from typing import Any

import kombu.connection
import oslo_messaging as messaging
from amqp import exceptions as amqp_exceptions
from oslo_config import cfg

from compute_driver import exception
from compute_driver.rpc import endpoint

CONTROL_EXCHANGE = "compute_driver"

#: Modules whose exceptions are rebuilt as the same class on the client side.
ALLOWED_EXMODS = [
    "compute_driver.exception",
    "storage_backends.exception",
    "network_plugins.exception",
    "compute_driver.virt.libvirt.guest_config",
]


def set_defaults() -> None:
    """Our defaults for oslo.messaging's options (the exchange).

    Also the ``oslo.config.opts.defaults`` hook (setup.cfg), so that the
    sample config shows the exchange the services use, not oslo's.
    """
    messaging.set_transport_defaults(control_exchange=CONTROL_EXCHANGE)


# NOTE: the default must be set before the transport options are first
# read, so it is done when this module is imported.
set_defaults()

# NOTE: keyed by the ConfigOpts and its transport_url: the global
# cfg.CONF may be loaded again with another file, and must not keep the
# transport (and with it the broker credential) of the first. Each entry
# keeps its ConfigOpts alive, so that no new one can take its id().
_transports: dict[tuple[int, str], tuple[cfg.ConfigOpts, messaging.Transport]] = {}


def get_transport(conf: cfg.ConfigOpts = cfg.CONF) -> messaging.Transport:
    """The RPC transport for ``conf`` (one per ConfigOpts and URL, reused)."""
    # NOTE: oslo.messaging registers transport_url with the first transport.
    try:
        found = _transports.get((id(conf), str(conf.transport_url)))
    except cfg.NoSuchOptError:
        found = None
    if found is not None:
        return found[1]
    made = messaging.get_rpc_transport(conf, allowed_remote_exmods=ALLOWED_EXMODS)
    _transports[(id(conf), str(conf.transport_url))] = (conf, made)
    return made


def _rabbit_option(conf: cfg.ConfigOpts, url: messaging.TransportURL, name: str) -> Any:
    """``[oslo_messaging_rabbit] name``, overridden by the URL's query, as oslo reads it."""
    if name in url.query:
        return url.query[name]
    group = getattr(conf, "oslo_messaging_rabbit", None)
    return getattr(group, name, None) if group is not None else None


def _ssl_params(
    conf: cfg.ConfigOpts, url: messaging.TransportURL, hostname: str
) -> dict[str, Any] | bool:
    """The TLS parameters oslo.messaging's rabbit driver would use (False: plain AMQP)."""
    enabled = _rabbit_option(conf, url, "ssl")
    if str(enabled).lower() not in ("1", "true", "yes", "on"):
        return False
    params: dict[str, Any] = {}
    for option, key in (
        ("ssl_key_file", "keyfile"),
        ("ssl_cert_file", "certfile"),
        ("ssl_ca_file", "ca_certs"),
    ):
        value = _rabbit_option(conf, url, option)
        if value:
            params[key] = value
    if "ca_certs" in params:
        params["cert_reqs"] = ssl.CERT_REQUIRED
        params["server_hostname"] = hostname
    return params or True


def check_broker(conf: cfg.ConfigOpts, retries: int) -> None:
    """Fail fast when no AMQP broker of ``transport_url`` answers.

    Connects as the service will: the URL's user and password (kombu's
    defaults when it has none, as oslo.messaging's), its vhost, and TLS when
    ``ssl`` is on (in the URL's query or ``[oslo_messaging_rabbit]``) with
    the same CA, certificate and key. A refused login is not retried.

    NOTE: oslo.messaging opens the reply queue of a first call with no retry
    limit, so a client would hang for as long as the broker is down.
    Checking first turns that into one clear error.

    :raises MessagingError: none of the brokers accepted a connection.
    """
    url = messaging.TransportURL.parse(conf, conf.transport_url)
    if url.transport not in ("rabbit", "amqp") or not url.hosts:
        return  # in-process transports (kombu+memory://, fake://) are always there
    errors = []
    for host in url.hosts:
        hostname = host.hostname or "localhost"
        connection = kombu.connection.Connection(
            hostname=hostname,
            port=host.port or 5672,
            userid=host.username,
            password=host.password,
            virtual_host=url.virtual_host or "/",
            ssl=_ssl_params(conf, url, hostname),
            connect_timeout=5,
        )
        try:
            connection.ensure_connection(
                max_retries=retries, interval_start=1, interval_step=1, interval_max=2
            )
            return
        except amqp_exceptions.AccessRefused as exc:
            # NOTE: wrong user, password or vhost: retrying changes nothing.
            errors.append(
                "%s:%s: login refused for user %s on vhost %s (%s)"
                % (
                    hostname,
                    host.port or 5672,
                    host.username,
                    url.virtual_host or "/",
                    exc.reply_text,
                )
            )
        except Exception as exc:  # noqa: BLE001 - any failure means "not this broker"
            errors.append("%s:%s: %s" % (hostname, host.port or 5672, exc))
        finally:
            connection.release()
    raise exception.MessagingError(service="the broker", reason="; ".join(errors))


def cleanup() -> None:
    """Close every transport this process opened."""
    for _conf, transport in _transports.values():
        transport.cleanup()
    _transports.clear()


def get_server(
    conf: cfg.ConfigOpts, target: messaging.Target, endpoints: list[Any]
) -> messaging.MessageHandlingServer:
    """An RPC server on ``target`` served by a pool of threads.

    NOTE: start it with ``start(override_pool_size=<workers>)``: the pool
    size option oslo.messaging reads otherwise is one for the whole process,
    and the scheduler and the agent of an embedded cloud each have theirs.
    """
    # NOTE: built here, not by messaging.get_rpc_server, for our dispatcher:
    # it answers unknown methods and versions with a bounded typed error.
    dispatcher = endpoint.Dispatcher(
        target.topic,
        endpoints,
        None,
        messaging.rpc.dispatcher.ExplicitRPCAccessPolicy,
    )
    return messaging.rpc.server.RPCServer(
        get_transport(conf), target, dispatcher, executor="threading"
    )
