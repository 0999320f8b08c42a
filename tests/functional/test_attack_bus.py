"""Attacks on the broker roles after issue 12 (the attack branch), against the
real RabbitMQ of the session's cloud.

A service that answers calls has write on ``amq.default`` (RabbitMQ's
default exchange, where the routing key is a queue's name and topic
permissions do not apply). The agents' requests are signed against that;
the scheduler's public API is not: an agent's credential can put a call
into the ``scheduler`` queue with any context, admin included.
"""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from typing import Any

import kombu
import pytest
from amqp import exceptions as amqp_exc
from cloud_env import Cloud
from test_bus_permissions import EXCHANGE, _publish, _url


def _wait_for_log(cloud: Cloud, service: str, either: str, timeout: float = 30) -> str:
    """The first line of ``service``'s log with one of the ``|``-separated texts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(cloud.log_path(service), "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                if any(text in line for text in either.split("|")):
                    return line
        time.sleep(0.2)
    raise AssertionError("none of %r in the %s log" % (either, service))


def _cast(method: str, args: dict[str, Any], context: dict[str, Any]) -> dict[str, str]:
    """An oslo.messaging cast envelope, context keys as the rabbit driver sends them."""
    message = {
        "method": method,
        "args": args,
        "namespace": None,
        "version": "1.0",
        "_unique_id": uuidlib.uuid4().hex,
        **{"_context_" + k: v for k, v in context.items()},
    }
    return {"oslo.version": "2.0", "oslo.message": json.dumps(message)}


def _network_names(cloud: Cloud) -> set[str]:
    return {n["name"] for n in cloud.ok("network", "list")}


def test_an_agent_credential_cannot_call_the_public_api_as_admin(cloud: Cloud) -> None:
    """A stolen agent credential must not be a cloud admin's."""
    assert cloud.roles is not None
    url = _url(cloud, "agent-" + cloud.host)
    name = "rogue-" + uuidlib.uuid4().hex[:8]
    args = {"uuid": str(uuidlib.uuid4()), "name": name, "type": "vxlan", "cidr": "10.99.0.0/24"}
    context = {"request_id": "req-" + str(uuidlib.uuid4()), "admin": True, "project": "victim"}
    try:
        _publish(url, "scheduler", exchange="", body=_cast("create_network", args, context))
    except amqp_exc.AccessRefused:
        return  # the broker refused it: what we want
    # The broker took it: the scheduler logs either the new network or the refusal.
    _wait_for_log(cloud, "compute-scheduler", args["uuid"] + "|" + context["request_id"])
    made = name in _network_names(cloud)
    if made:
        cloud.ctl("network", "delete", name)
    assert not made, "an agent's credential created a network as admin in project victim"


@pytest.mark.parametrize(
    ("exchange", "key"),
    [
        ("", "scheduler"),
        ("", "agent_reports"),
        ("", "compute.{host}"),
        ("compute_fanout", ""),
        ("scheduler_fanout", ""),
        ("agent_reports_fanout", ""),
        (EXCHANGE, "compute.{host}"),
        (EXCHANGE, "agent_reports"),
        (EXCHANGE, "scheduler.{host}"),
        (EXCHANGE, "#"),
    ],
)
def test_a_client_credential_publishes_to_the_public_api_only(
    cloud: Cloud, exchange: str, key: str
) -> None:
    url = _url(cloud, "client")
    key = key.format(host=cloud.host)
    with pytest.raises(amqp_exc.AccessRefused):
        if exchange in ("", EXCHANGE):
            _publish(url, key, exchange=exchange)
        else:
            with kombu.Connection(url, transport_options={"confirm_publish": True}) as conn:
                target = kombu.Exchange(exchange, "fanout", passive=True)
                kombu.Producer(conn.channel()).publish({}, exchange=target, routing_key=key)


def test_a_client_cannot_route_through_an_exchange_of_its_own(cloud: Cloud) -> None:
    """Configure on ``reply_<hex>`` names exchanges too: a client may declare
    one, but binding the control exchange into it or publishing to it is refused."""
    url = _url(cloud, "client")
    own = "reply_" + uuidlib.uuid4().hex
    with kombu.Connection(url) as conn:
        channel = conn.channel()
        channel.exchange_declare(own, "topic", auto_delete=False)
        with pytest.raises(amqp_exc.AccessRefused):
            channel.exchange_bind(destination=own, source=EXCHANGE, routing_key="#")
    with kombu.Connection(url) as conn:
        channel = conn.channel()
        # source = its own exchange, destination = the control exchange: the
        # broker needs write on the destination (the client has it) and read
        # on the source (reply_* matches): only the publish to it is left.
        try:
            channel.exchange_bind(destination=EXCHANGE, source=own, routing_key="")
        except amqp_exc.AccessRefused:
            return
    with pytest.raises(amqp_exc.AccessRefused):
        _publish(url, "compute." + cloud.host, exchange=own)
