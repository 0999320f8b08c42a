"""Errors as an outside client sees them: plain oslo.messaging, none of our code.

A scheduler or an upstream API written against docs/rpc-api.md builds its
own RPC client (the exchange and topic from the docs, its broker user's
URL) and cannot rebuild our exception classes: every error reaches it as
``oslo_messaging.RemoteError``. The docs promise that its ``value`` is a
JSON object with the stable ``code`` (and ``kind``, ``message``,
``request_id``), and that no reply carries a traceback or a server path.

NOTE: nothing of compute_driver is imported here, on purpose: the calling
code path is what an outside team can write from the docs alone (the
client signature below is the HMAC the scheduler API's docs describe).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import oslo_messaging as messaging
import pytest
from cloud_env import Cloud
from oslo_config import cfg

#: What the docs name: the exchange, the topics and the API version.
EXCHANGE = "compute_driver"
VERSION = "1.0"
#: The context size the docs bound (bytes of JSON); a hostile one is far past it.
HUGE = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def outside_conf() -> cfg.ConfigOpts:
    # NOTE: oslo.messaging wants the global config object (it registers some
    # of its options there only); an outside client has nothing else.
    return cfg.CONF


def _client(conf: cfg.ConfigOpts, url: str, topic: str, server: str | None = None) -> Any:
    transport = messaging.get_rpc_transport(conf, url=url)
    target = messaging.Target(exchange=EXCHANGE, topic=topic, server=server, version=VERSION)
    return transport, messaging.get_rpc_client(transport, target, timeout=60)


@pytest.fixture(scope="module")
def scheduler(cloud: Cloud, outside_conf: cfg.ConfigOpts) -> Iterator[Any]:
    """An RPC client of topic ``scheduler`` with the client's broker user."""
    assert cloud.roles is not None
    transport, client = _client(outside_conf, cloud.roles.urls["client"], "scheduler")
    yield client
    transport.cleanup()


@pytest.fixture(scope="module")
def agent(cloud: Cloud, outside_conf: cfg.ConfigOpts) -> Iterator[Any]:
    """An RPC client of topic ``compute``, server = the agent's host (the scheduler's user)."""
    assert cloud.roles is not None
    transport, client = _client(
        outside_conf, cloud.roles.urls["scheduler"], "compute", server=cloud.host
    )
    yield client
    transport.cleanup()


def _context(**extra: Any) -> dict[str, Any]:
    return {"request_id": "req-" + str(uuidlib.uuid4()), "admin": True, **extra}


def _signed(key: str, method: str, context: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """A public call's ``signature``, made as the docs say, without our code."""
    timestamp = int(time.time())
    body = json.dumps(
        ["scheduler:" + method, timestamp, {"context": context, "args": args}],
        sort_keys=True,
        separators=(",", ":"),
    )
    mac = hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()
    return dict(args, signature={"timestamp": timestamp, "hmac": mac})


def _error(call: Any) -> messaging.RemoteError:
    try:
        answer = call()
    except messaging.RemoteError as exc:
        return exc
    raise AssertionError("no error but %r" % (answer,))


def _code(error: messaging.RemoteError) -> dict[str, Any]:
    """The error's documented wire form, and no trace of the server's files."""
    text = "%s\n%s\n%s" % (error.value, error.traceback, error)
    assert "Traceback" not in text, text[:2000]
    assert 'File "' not in text and ".py" not in text, text[:2000]
    wire = json.loads(error.value)
    assert set(wire) >= {"code", "kind", "message", "request_id"}, wire
    return wire


@pytest.mark.parametrize("side", ["scheduler", "agent"])
def test_unknown_method_has_a_code(request, side: str) -> None:
    client = request.getfixturevalue(side)
    context = _context()
    error = _error(lambda: client.call(context, "no_such_method"))
    wire = _code(error)
    assert (wire["code"], wire["kind"]) == ("unknown_method", "invalid")
    assert wire["request_id"] == context["request_id"]


@pytest.mark.parametrize("side", ["scheduler", "agent"])
@pytest.mark.parametrize(
    ("version", "code"), [("abc", "invalid_version"), ("9.0", "unsupported_version")]
)
def test_a_bad_version_has_a_code(request, side: str, version: str, code: str) -> None:
    client = request.getfixturevalue(side)
    if version == "abc":
        # NOTE: oslo.messaging's client refuses such a version before sending;
        # a client of another language (or the transport itself) sends it.
        message = {"method": "ping", "args": {}, "version": version}
        target = client.target
        error = _error(
            lambda: client.transport._send(target, _context(), message, wait_for_reply=True)
        )
    else:
        error = _error(lambda: client.prepare(version=version).call(_context(), "ping"))
    assert _code(error)["code"] == code


@pytest.mark.parametrize("side", ["scheduler", "agent"])
@pytest.mark.parametrize("where", ["user", "padding"])
def test_an_oversized_context_has_a_code(request, side: str, where: str) -> None:
    client = request.getfixturevalue(side)
    context = _context(**{where: "u" * HUGE})
    error = _error(lambda: client.call(context, "ping"))
    wire = _code(error)
    assert wire["code"] == "invalid_context"
    # One line, with neither the value nor megabytes of it echoed back.
    assert len(error.value) < 1024 and "\n" not in wire["message"]


def test_a_server_not_found_has_a_code(cloud: Cloud, scheduler: Any) -> None:
    assert cloud.roles is not None
    context = _context()
    missing = str(uuidlib.uuid4())
    args = _signed(cloud.roles.client_key(), "show_server", context, {"server": missing})
    error = _error(lambda: scheduler.call(context, "show_server", **args))
    wire = _code(error)
    assert (wire["code"], wire["kind"]) == ("instance_not_found", "not_found")
    assert missing in wire["message"]
    # The class name still travels, for clients that go by it.
    assert error.exc_type == "InstanceNotFound"
