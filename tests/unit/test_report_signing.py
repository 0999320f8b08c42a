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
