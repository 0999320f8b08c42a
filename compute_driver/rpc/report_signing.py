"""Signed agent reports: a host speaks only for itself.

The broker's permissions let only agents publish reports, but every agent
publishes to the same topic, and oslo.messaging hands an endpoint neither
the routing key nor the user that published, so the broker cannot tell the
scheduler which host sent a report. A signature can: every report carries
``signature`` = {``timestamp``, ``hmac``}, an HMAC-SHA256 under the host's
own key of the method name, the timestamp and the payload (canonical JSON).

A host's key is derived from the scheduler's ``[agent_reports] secret`` and
the host name (:func:`host_key`), so the scheduler checks every host with
one secret, and an agent that holds the key of ``h0`` cannot sign for
``h1``: the scheduler checks a report for ``h1`` with ``h1``'s key.

The scheduler signs its requests to an agent the same way, with the key of
that agent's host (:func:`sign_request`): the broker lets every service that
answers calls publish to any queue through the default exchange, so an
agent could otherwise put a request into another agent's queue.

Public scheduler calls are signed too, with the client key
(:func:`client_key`, ``[client] key``): the agents' broker credential must
publish to the default exchange to answer the scheduler, and the default
exchange delivers to any queue by name, the public ``scheduler`` queue
included, whose context says who is an admin. The signature covers the
context, so only a holder of the client key (computectl, an upstream API)
can speak as a project or an admin; an agent holds its host key only.

``python -m compute_driver.rpc.report_signing HOST`` reads the secret from
standard input and prints HOST's key (the operator's way to make one; the
secret never appears in a command line); ``--client`` instead of HOST prints
the client key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from compute_driver import exception

#: Seconds a report's timestamp may be from the scheduler's clock.
MAX_SKEW = 300

# NOTE: a fixed context string, so that a key derived here is good for
# nothing else the same secret might one day be used for.
_KEY_CONTEXT = b"compute-driver agent report key v1\x00"
# NOTE: another context, not a host name: no host's key is the client key,
# whatever the host is called.
_CLIENT_KEY_CONTEXT = b"compute-driver client key v1\x00"


def host_key(secret: str, host: str) -> str:
    """The report key of ``host`` (64 hex digits) derived from ``secret``."""
    return hmac.new(secret.encode(), _KEY_CONTEXT + host.encode(), hashlib.sha256).hexdigest()


def client_key(secret: str) -> str:
    """The client key (64 hex digits) derived from ``secret``: public scheduler calls."""
    return hmac.new(secret.encode(), _CLIENT_KEY_CONTEXT, hashlib.sha256).hexdigest()


def _mac(key: str, method: str, timestamp: int, payload: dict[str, Any]) -> str:
    # NOTE: canonical JSON (sorted keys, no spaces) of what arrives as the
    # method's keyword arguments: both ends see the same decoded values.
    message = json.dumps([method, timestamp, payload], sort_keys=True, separators=(",", ":"))
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign(
    key: str, method: str, payload: dict[str, Any], now: float | None = None
) -> dict[str, Any]:
    """``payload`` with its ``signature`` under ``key``."""
    timestamp = int(time.time() if now is None else now)
    signature = {"timestamp": timestamp, "hmac": _mac(key, method, timestamp, payload)}
    return dict(payload, signature=signature)


def _check(
    key: str,
    label: str,
    payload: dict[str, Any],
    refused: Callable[[str], Exception],
    now: float | None,
    whose: str,
) -> None:
    signature = payload.get("signature")
    if not isinstance(signature, dict):
        raise refused("it is not signed")
    timestamp = signature["timestamp"]
    skew = abs((time.time() if now is None else now) - timestamp)
    if skew > MAX_SKEW:
        raise refused(
            "its timestamp is %d s from this host's clock (at most %d)" % (skew, MAX_SKEW)
        )
    body = {k: v for k, v in payload.items() if k != "signature"}
    if not hmac.compare_digest(_mac(key, label, timestamp, body), signature["hmac"]):
        raise refused("its signature is not the key of %s" % whose)


def verify(secret: str, method: str, payload: dict[str, Any], now: float | None = None) -> None:
    """Check that a report (with ``signature``) was signed by its own ``host``.

    :raises ReportRefused: the signature is missing, stale, or not made with
        the key of the host the payload names.
    """
    host = str(payload.get("host"))

    def refused(reason: str) -> Exception:
        return exception.ReportRefused(method=method, host=host, reason=reason)

    _check(host_key(secret, host), method, payload, refused, now, "host " + host)


# NOTE: requests are signed under another label than reports, so that no
# signed report can ever pass for a request (or the other way round).
_REQUEST = "compute:"


def sign_request(secret: str, host: str, method: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A scheduler's request to ``host``'s agent, signed with that host's key."""
    return sign(host_key(secret, host), _REQUEST + method, payload)


def verify_request(
    key: str, host: str, method: str, payload: dict[str, Any], now: float | None = None
) -> None:
    """Check, on ``host``'s agent, that a request was signed by the scheduler for it.

    :raises RequestRefused: the signature is missing, stale, or not made
        with this host's key (another agent cannot make one).
    """

    def refused(reason: str) -> Exception:
        return exception.RequestRefused(method=method, host=host, reason=reason)

    _check(key, _REQUEST + method, payload, refused, now, "this host (%s)" % host)


# NOTE: public calls are signed under a label of their own, and over the
# context as well as the arguments: the context carries the admin claim.
_CALL = "scheduler:"


def sign_call(
    key: str,
    method: str,
    context: dict[str, Any],
    payload: dict[str, Any],
    now: float | None = None,
) -> dict[str, Any]:
    """``payload`` of a public scheduler call, with its ``signature`` under
    the client ``key`` over the method, the time, the payload and ``context``."""
    signed = sign(key, _CALL + method, {"context": context, "args": payload}, now)
    return dict(payload, signature=signed["signature"])


def verify_call(
    secret: str,
    method: str,
    context: dict[str, Any],
    payload: dict[str, Any],
    host: str,
    now: float | None = None,
) -> None:
    """Check, on the scheduler (``host``), that a public call was signed with
    the client key for this very context and payload.

    :raises RequestRefused: the signature is missing, stale, or not made
        with the client key (an agent's key cannot make one).
    """

    def refused(reason: str) -> Exception:
        return exception.RequestRefused(method=method, host=host, reason=reason)

    body = {k: v for k, v in payload.items() if k != "signature"}
    signed = {"context": context, "args": body, "signature": payload.get("signature")}
    _check(client_key(secret), _CALL + method, signed, refused, now, "a client")


def configured_client_key(conf: cfg.ConfigOpts) -> str | None:
    """The client key: ``[client] key``, or derived from ``[agent_reports] secret``
    when the same configuration has it (the scheduler's host, one file for all)."""
    if conf.client.key:
        return str(conf.client.key)
    if conf.agent_reports.secret:
        return client_key(conf.agent_reports.secret)
    return None


def configured_key(conf: cfg.ConfigOpts) -> str | None:
    """This host's key: ``[agent_reports] key``, or derived from ``secret`` when
    the same configuration has it (one process or one file for both services)."""
    if conf.agent_reports.key:
        key: str = conf.agent_reports.key
        return key
    if conf.agent_reports.secret:
        return host_key(conf.agent_reports.secret, conf.host)
    return None


def main(argv: list[str] | None = None) -> int:
    """Print the report key of the host named in ``argv``, or with
    ``--client`` the client key (secret on stdin)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m compute_driver.rpc.report_signing HOST|--client < secret",
            file=sys.stderr,
        )
        return 2
    secret = sys.stdin.readline().rstrip("\n")
    if not secret:
        print("report_signing: no secret on standard input", file=sys.stderr)
        return 2
    print(client_key(secret) if args[0] == "--client" else host_key(secret, args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
