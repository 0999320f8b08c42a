"""Signed agent reports: a host's key signs for that host only."""

from __future__ import annotations

import pytest

from compute_driver import exception
from compute_driver.rpc import report_signing

SECRET = "scheduler-secret"
PAYLOAD = {"host": "h0", "uuid": "6f1c1ba2-5d0e-4a8e-9c39-0d6a1b9b8d7e", "power_state": "shutdown"}
NOW = 1_800_000_000


def _signed(host_key_of: str, payload: dict = PAYLOAD, now: float = NOW) -> dict:
    key = report_signing.host_key(SECRET, host_key_of)
    return report_signing.sign(key, "instance_power_changed", payload, now=now)


def test_a_host_signs_for_itself() -> None:
    report_signing.verify(SECRET, "instance_power_changed", _signed("h0"), now=NOW + 1)


def test_keys_differ_per_host_and_per_secret() -> None:
    keys = {
        report_signing.host_key(SECRET, "h0"),
        report_signing.host_key(SECRET, "h1"),
        report_signing.host_key("other", "h0"),
    }
    assert len(keys) == 3 and all(len(k) == 64 for k in keys)


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        (_signed("h0", dict(PAYLOAD, host="h1")), "not the key of host h1"),
        (dict(_signed("h0"), power_state="running"), "not the key of host h0"),
        (dict(PAYLOAD), "not signed"),
        (_signed("h0", now=NOW - report_signing.MAX_SKEW - 5), "from this host's clock"),
    ],
    ids=["another-host", "tampered", "unsigned", "stale"],
)
def test_a_report_not_signed_by_its_own_host_is_refused(report: dict, reason: str) -> None:
    with pytest.raises(exception.ReportRefused) as info:
        report_signing.verify(SECRET, "instance_power_changed", report, now=NOW)
    assert reason in info.value.message and info.value.code == "report_refused"


def test_a_signature_is_for_one_method() -> None:
    with pytest.raises(exception.ReportRefused):
        report_signing.verify(SECRET, "instance_deleted", _signed("h0"), now=NOW)


def test_main_prints_a_hosts_key(monkeypatch, capsys) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert report_signing.main(["h0"]) == 0
    assert capsys.readouterr().out.strip() == report_signing.host_key(SECRET, "h0")


def test_the_scheduler_signs_a_request_for_one_host_only() -> None:
    payload = {"uuid": PAYLOAD["uuid"], "timeout": 60}
    signed = report_signing.sign_request(SECRET, "h0", "stop_instance", payload)
    report_signing.verify_request(
        report_signing.host_key(SECRET, "h0"), "h0", "stop_instance", signed
    )
    with pytest.raises(exception.RequestRefused) as info:
        report_signing.verify_request(
            report_signing.host_key(SECRET, "h1"), "h1", "stop_instance", signed
        )
    assert "not the key of this host (h1)" in info.value.message
    assert info.value.code == "request_refused"


def test_an_agents_own_signature_is_no_request() -> None:
    """What agent h0 can sign (its reports) never passes as a request to h0."""
    key = report_signing.host_key(SECRET, "h0")
    forged = report_signing.sign(key, "stop_instance", {"uuid": PAYLOAD["uuid"]})
    with pytest.raises(exception.RequestRefused):
        report_signing.verify_request(key, "h0", "stop_instance", forged)
    with pytest.raises(exception.RequestRefused, match="not signed"):
        report_signing.verify_request(key, "h0", "stop_instance", {"uuid": PAYLOAD["uuid"]})


# --- public scheduler calls (issue 12: no bus client acts as a host) ---------

CONTEXT = {"request_id": "req-1", "admin": False, "project": "p1"}
CALL = {"name": "net-1", "cidr": "10.0.0.0/24"}


def _call(key: str | None = None, context: dict = CONTEXT, now: float = NOW) -> dict:
    key = report_signing.client_key(SECRET) if key is None else key
    return report_signing.sign_call(key, "create_network", context, CALL, now=now)


def test_a_client_signs_a_call_with_its_context() -> None:
    signed = _call()
    assert {k: v for k, v in signed.items() if k != "signature"} == CALL
    report_signing.verify_call(SECRET, "create_network", CONTEXT, signed, "s0", now=NOW + 1)


@pytest.mark.parametrize(
    ("context", "method", "payload"),
    [
        # The same signature under an admin claim or another project: refused.
        (dict(CONTEXT, admin=True), "create_network", _call()),
        (dict(CONTEXT, project="victim"), "create_network", _call()),
        ({k: v for k, v in CONTEXT.items() if k != "project"}, "create_network", _call()),
        (CONTEXT, "delete_network", _call()),
        (CONTEXT, "create_network", dict(_call(), cidr="10.9.0.0/24")),
    ],
)
def test_a_signed_call_covers_its_context_method_and_payload(
    context: dict, method: str, payload: dict
) -> None:
    with pytest.raises(exception.RequestRefused, match="not the key of a client"):
        report_signing.verify_call(SECRET, method, context, payload, "s0", now=NOW)


def test_an_agents_key_cannot_sign_a_call() -> None:
    """No host's key is the client key, whatever the host is called."""
    client = report_signing.client_key(SECRET)
    for host in ("client", "client:", "", "scheduler", "h0"):
        assert report_signing.host_key(SECRET, host) != client
        forged = _call(key=report_signing.host_key(SECRET, host))
        with pytest.raises(exception.RequestRefused) as info:
            report_signing.verify_call(SECRET, "create_network", CONTEXT, forged, "s0", now=NOW)
        assert info.value.code == "request_refused"
    # A report or a request signature is no call signature either.
    request = report_signing.sign(client, "create_network", dict(CALL), now=NOW)
    with pytest.raises(exception.RequestRefused):
        report_signing.verify_call(SECRET, "create_network", CONTEXT, request, "s0", now=NOW)


def test_an_unsigned_or_stale_call_is_refused() -> None:
    with pytest.raises(exception.RequestRefused, match="not signed"):
        report_signing.verify_call(SECRET, "create_network", CONTEXT, dict(CALL), "s0", now=NOW)
    stale = _call(now=NOW - report_signing.MAX_SKEW - 5)
    with pytest.raises(exception.RequestRefused, match="from this host's clock"):
        report_signing.verify_call(SECRET, "create_network", CONTEXT, stale, "s0", now=NOW)


def test_main_prints_the_client_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert report_signing.main(["--client"]) == 0
    assert capsys.readouterr().out.strip() == report_signing.client_key(SECRET)
