"""oslo.messaging plumbing shared by every service and client.

One place decides how we talk to the bus: the exchange, which exception
modules may be rebuilt from remote errors, and the threading executor
(eventlet is deprecated; we never monkey-patch).
"""

from __future__ import annotations

import kombu
import oslo_messaging as messaging
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

# NOTE: the default must be set before the transport options are first
# read, so it is done when this module is imported.
messaging.set_transport_defaults(control_exchange=CONTROL_EXCHANGE)

_transports: dict[int, messaging.Transport] = {}


def get_transport(conf: cfg.ConfigOpts = cfg.CONF) -> messaging.Transport:
    """The RPC transport for ``conf`` (one per ConfigOpts, reused)."""
    key = id(conf)
    if key not in _transports:
        _transports[key] = messaging.get_rpc_transport(conf, allowed_remote_exmods=ALLOWED_EXMODS)
    return _transports[key]


def check_broker(conf: cfg.ConfigOpts, retries: int) -> None:
    """Fail fast when no AMQP broker of ``transport_url`` answers.

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
        connection = kombu.Connection(
            hostname=host.hostname or "localhost",
            port=host.port or 5672,
            userid=host.username or "guest",
            password=host.password or "guest",
            virtual_host=url.virtual_host or "/",
            connect_timeout=5,
        )
        try:
            connection.ensure_connection(
                max_retries=retries, interval_start=1, interval_step=1, interval_max=2
            )
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not this broker"
            errors.append("%s:%s: %s" % (host.hostname, host.port or 5672, exc))
        finally:
            connection.release()
    raise exception.MessagingError(service="the broker", reason="; ".join(errors))


def cleanup() -> None:
    """Close every transport this process opened."""
    for transport in _transports.values():
        transport.cleanup()
    _transports.clear()


def get_server(
    conf: cfg.ConfigOpts, target: messaging.Target, endpoints: list
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
