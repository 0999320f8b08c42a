"""Who may say what on the bus, proven against the real RabbitMQ broker.

The session's cloud runs with one broker user per role, made by
tools/rabbitmq-users.sh: computectl and these tests' "client" hold the
client's credential, the scheduler its own, the agent ``agent-<host>``
with its report key. Each test sends what an attacker holding one of them
would send, and checks that the broker (or the scheduler, for a report
signed with the wrong key) refuses it and that nothing changed.
"""

from __future__ import annotations

import json
import os
import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import kombu
import oslo_messaging as messaging
import pytest
from amqp import exceptions as amqp_exc
from cloud_env import Cloud
from oslo_config import cfg

from compute_driver import config, exception
from compute_driver.rpc import report_signing, transport
from compute_driver.rpc.agent_reports_api import AgentReportsAPI

EXCHANGE = "compute_driver"
FORGED_RESOURCES = {"vcpus": 65536, "memory_mb": 2**30, "disk_gb": 2**20}


def _conf(cloud: Cloud, service: str | None) -> cfg.ConfigOpts:
    """The configuration ``service`` runs with (None: the client's)."""
    return config.load(cloud.config_args(service), "functional-test", default_config_files=[])


def _url(cloud: Cloud, role: str) -> str:
    """``role``'s broker URL, for kombu (which calls the scheme amqp://)."""
    assert cloud.roles is not None, "the cloud fixture runs without broker roles"
    return "amqp://" + cloud.roles.urls[role].partition("://")[2]


def _publish(url: str, routing_key: str, exchange: str = EXCHANGE, body: Any = None) -> None:
    """Publish one message with publisher confirms: returns only once the broker took it.

    :raises amqp.exceptions.AccessRefused: the broker refused it.
    """
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        target = (
            kombu.Exchange(exchange, "topic", durable=False)
            if exchange
            else kombu.Exchange("", "direct", passive=True)
        )
        kombu.Producer(channel).publish(
            body or {"oslo.version": "2.0", "oslo.message": "{}"},
            exchange=target,
            routing_key=routing_key,
            declare=[target] if exchange else [],
        )


def _host_names(cloud: Cloud) -> set[str]:
    return {h["name"] for h in cloud.ok("host", "list")}


def _log_size(cloud: Cloud, service: str) -> int:
    return os.path.getsize(cloud.log_path(service))


def _wait_for_log(
    cloud: Cloud, service: str, text: str, after: int = 0, timeout: float = 30
) -> str:
    """The first line of ``service``'s log past byte ``after`` that holds ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(cloud.log_path(service), "rb") as f:
            f.seek(after)
            for line in f.read().decode(errors="replace").splitlines():
                if text in line:
                    return line
        time.sleep(0.2)
    raise AssertionError("%r not in the %s log:\n%s" % (text, service, cloud.tail(service)))


@pytest.fixture
def client_conf(cloud: Cloud) -> Iterator[cfg.ConfigOpts]:
    conf = _conf(cloud, None)
    yield conf
    transport.cleanup()  # NOTE: and forget it: a later conf may reuse its id()


@pytest.fixture
def agent_conf(cloud: Cloud) -> Iterator[cfg.ConfigOpts]:
    conf = _conf(cloud, "compute-agent")
    yield conf
    transport.cleanup()  # NOTE: and forget it: a later conf may reuse its id()


# --- a client credential ----------------------------------------------------------------


def test_client_cannot_report_a_host(cloud: Cloud, client_conf: cfg.ConfigOpts) -> None:
    invented = "ft-invented-" + uuidlib.uuid4().hex[:6]
    # Through our own client class, as a buggy or hostile client would.
    with pytest.raises(exception.MessagingError) as info:
        AgentReportsAPI(client_conf).report_host(invented, FORGED_RESOURCES, {}, [])
    assert "ACCESS_REFUSED" in info.value.message
    # And raw, with publisher confirms: the broker itself says no.
    with pytest.raises(amqp_exc.AccessRefused):
        _publish(_url(cloud, "client"), "agent_reports")
    # The public topic no longer serves reports at all.
    public = messaging.get_rpc_client(
        transport.get_transport(client_conf), messaging.Target(topic="scheduler", version="1.0")
    )
    # NOTE: refused before any method runs: the dispatcher's typed UnknownMethod
    # (rpc/endpoint.py), or an oslo.messaging error from an older scheduler.
    with pytest.raises((messaging.MessagingException, exception.UnknownMethod)):
        public.call(
            {},
            "report_host",
            host=invented,
            resources=FORGED_RESOURCES,
            capabilities={},
            instances=[],
        )
    assert invented not in _host_names(cloud)


def test_client_cannot_cast_to_an_agent(cloud: Cloud, client_conf: cfg.ConfigOpts) -> None:
    uuid = str(uuidlib.uuid4())
    compute = messaging.get_rpc_client(
        transport.get_transport(client_conf),
        messaging.Target(topic="compute", server=cloud.host, version="1.0"),
    )
    with pytest.raises(messaging.MessagingException) as info:
        compute.prepare(retry=0).cast({}, "build_instance", instance={"uuid": uuid, "name": "x"})
    assert "ACCESS_REFUSED" in str(info.value)
    # Neither to the host's queue nor to the shared one, nor around the
    # topic exchange through the default exchange (straight to the queue).
    for exchange, key in (
        (EXCHANGE, "compute." + cloud.host),
        (EXCHANGE, "compute"),
        ("", "compute." + cloud.host),
        (EXCHANGE, "agent_reports"),
        ("", "agent_reports"),
    ):
        with pytest.raises(amqp_exc.AccessRefused):
            _publish(_url(cloud, "client"), key, exchange)
    assert uuid not in open(cloud.log_path("compute-agent"), errors="replace").read()


def test_client_cannot_consume_an_agents_queue(cloud: Cloud) -> None:
    with kombu.Connection(_url(cloud, "client")) as conn:
        queue = kombu.Queue("compute." + cloud.host, no_declare=True)
        with pytest.raises(amqp_exc.AccessRefused):
            with kombu.Consumer(conn.channel(), [queue], callbacks=[lambda *a: None]):
                pass


@pytest.fixture(scope="module")
def running_server(cloud: Cloud, guest_image: dict[str, Any]) -> Iterator[dict[str, Any]]:
    server = cloud.create_server("ft-bus-victim", guest_image["uuid"])
    assert server["vm_state"] == "active"
    yield server
    cloud.ctl("server", "delete", server["uuid"], "--wait", timeout=120)


def test_client_cannot_stop_a_server_with_a_forged_power_change(
    cloud: Cloud, client_conf: cfg.ConfigOpts, running_server: dict
) -> None:
    uuid = running_server["uuid"]
    with pytest.raises(exception.MessagingError) as info:
        AgentReportsAPI(client_conf).instance_power_changed(cloud.host, uuid, "shutdown")
    assert "ACCESS_REFUSED" in info.value.message
    # NOTE: with publisher confirms, the refusal is the broker's answer to
    # this very message: nothing is on its way to the scheduler.
    with pytest.raises(amqp_exc.AccessRefused):
        _publish(_url(cloud, "client"), "agent_reports")
    server = cloud.ok("server", "show", uuid)
    assert (server["vm_state"], server["power_state"]) == ("active", "running")


# --- an agent's credential --------------------------------------------------------------


def test_agent_cannot_report_for_another_host(
    cloud: Cloud, agent_conf: cfg.ConfigOpts, running_server: dict
) -> None:
    """Agent h0's credential and key, reporting for h1: refused by the scheduler."""
    other = "ft-other-" + uuidlib.uuid4().hex[:6]
    reports = AgentReportsAPI(agent_conf)
    reports.report_host(other, FORGED_RESOURCES, {}, [])
    _wait_for_log(cloud, "compute-scheduler", "report_host for host %s refused" % other)
    # Unsigned, or signed with h0's key for h0's own server but naming h1.
    unsigned = AgentReportsAPI(agent_conf)
    unsigned._key = None
    unsigned.instance_power_changed(other, running_server["uuid"], "shutdown")
    line = _wait_for_log(
        cloud, "compute-scheduler", "instance_power_changed for host %s refused" % other
    )
    assert "not signed" in line
    reports.instance_deleted(other, running_server["uuid"])
    line = _wait_for_log(cloud, "compute-scheduler", "instance_deleted for host %s refused" % other)
    assert "not the key of host %s" % other in line
    assert other not in _host_names(cloud)
    server = cloud.ok("server", "show", running_server["uuid"])
    assert (server["vm_state"], server["host"]) == ("active", cloud.host)


def test_agent_own_signed_report_is_accepted(cloud: Cloud, agent_conf: cfg.ConfigOpts) -> None:
    key = report_signing.host_key(cloud.roles.report_secret, cloud.host)  # type: ignore[union-attr]
    assert agent_conf.agent_reports.key == key
    assert agent_conf.agent_reports.secret is None  # an agent never holds the secret
    before = cloud.ok("host", "show", cloud.host)["reported_at"]
    deadline = time.monotonic() + 30
    while cloud.ok("host", "show", cloud.host)["reported_at"] == before:
        assert time.monotonic() < deadline, "the agent's signed reports do not land"
        time.sleep(0.5)


def test_agent_cannot_cast_to_another_agent_or_consume_its_queue(cloud: Cloud) -> None:
    url = _url(cloud, "agent-" + cloud.host)
    with pytest.raises(amqp_exc.AccessRefused):
        _publish(url, "compute.ft-other-host")
    with pytest.raises(amqp_exc.AccessRefused):
        _publish(url, "scheduler")
    with kombu.Connection(url) as conn:
        with pytest.raises(amqp_exc.AccessRefused):
            kombu.Queue(
                "compute.ft-other-host",
                kombu.Exchange(EXCHANGE, "topic", durable=False),
                routing_key="compute.ft-other-host",
                durable=False,
            )(conn.channel()).declare()
    with kombu.Connection(url) as conn:
        # Its own queue, bound to another host's routing key: refused too.
        with pytest.raises(amqp_exc.AccessRefused):
            conn.channel().queue_bind("compute." + cloud.host, EXCHANGE, "compute.ft-other-host")


def _forged_cast(method: str, args: dict[str, Any]) -> dict[str, str]:
    """An oslo.messaging cast envelope, as the rabbit driver puts it on the wire."""
    message = {
        "method": method,
        "args": args,
        "namespace": None,
        "version": "1.0",
        "_unique_id": uuidlib.uuid4().hex,
        "_context_request_id": "req-forged",
    }
    return {"oslo.version": "2.0", "oslo.message": json.dumps(message)}


@pytest.mark.parametrize("signed_by", ["nobody", "another agent"])
def test_another_agent_cannot_stop_a_server_through_the_default_exchange(
    cloud: Cloud, running_server: dict, signed_by: str
) -> None:
    """RabbitMQ lets every service that answers calls publish to any queue by
    name (write on amq.default): the agent refuses what the scheduler did not sign."""
    assert cloud.roles is not None
    other = "ft-rogue-" + uuidlib.uuid4().hex[:6]
    url = "amqp://" + cloud.roles.add_agent(other).partition("://")[2]
    args: dict[str, Any] = {"uuid": running_server["uuid"], "timeout": 0}
    if signed_by == "another agent":
        # The rogue's own key, and the label a request is signed with.
        args = report_signing.sign(cloud.roles.agent_key(other), "compute:stop_instance", args)
    before = _log_size(cloud, "compute-agent")
    # The broker takes it (this is the gap the signature closes) ...
    _publish(url, "compute." + cloud.host, exchange="", body=_forged_cast("stop_instance", args))
    # ... and the agent refuses it, before anything happens.
    line = _wait_for_log(
        cloud, "compute-agent", "stop_instance to host %s refused" % cloud.host, after=before
    )
    assert ("not signed" if signed_by == "nobody" else "not the key of this host") in line
    server = cloud.ok("server", "show", running_server["uuid"])
    assert (server["vm_state"], server["power_state"]) == ("active", "running")


def test_service_configs_hold_only_their_own_secrets(cloud: Cloud) -> None:
    for service in ("compute-scheduler", "compute-agent"):
        assert os.stat(cloud.service_configs[service]).st_mode & 0o077 == 0
    assert _conf(cloud, None).agent_reports.secret is None
    assert _conf(cloud, None).agent_reports.key is None


def test_check_broker_logs_in_with_the_services_own_credential(cloud: Cloud) -> None:
    conf = _conf(cloud, None)
    transport.check_broker(conf, retries=0)  # the client's own user and vhost
    url = cloud.roles.urls["client"]  # type: ignore[union-attr]
    user, _, rest = url.partition("://")[2].partition(":")
    wrong = "rabbit://%s:wrong-secret@%s" % (user, rest.partition("@")[2])
    # NOTE: the global cfg.CONF: the override must not outlive this test.
    conf.set_override("transport_url", wrong)
    try:
        with pytest.raises(exception.MessagingError) as info:
            transport.check_broker(conf, retries=3)
    finally:
        conf.clear_override("transport_url")
    assert "login refused for user %s" % user in info.value.message
    assert "wrong-secret" not in info.value.message
