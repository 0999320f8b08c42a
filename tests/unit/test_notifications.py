"""Notifications never hold up the request that sends them (issue 13 item 7).

The oslo notifier here is a stand-in that blocks as oslo's does while the
broker is away (it retries for ever), to reach that path without stopping a
broker; tests/functional/faults/ sends to a broker that is not there.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver import notifications

#: A guard against a hang, never a measure of speed.
HANG = 30


class AwayBroker:
    """An oslo Notifier whose broker is away until :meth:`back` is called."""

    def __init__(self) -> None:
        self.returned = threading.Event()
        self.sent: list[tuple[str, str]] = []
        self.waiting = threading.Event()

    def back(self) -> None:
        self.returned.set()

    def _notify(self, event_type: str, body: dict[str, Any]) -> None:
        self.waiting.set()
        self.returned.wait()
        self.sent.append((event_type, body["instance"]["uuid"]))

    def info(self, ctxt: dict, event_type: str, body: dict[str, Any]) -> None:
        self._notify(event_type, body)

    def error(self, ctxt: dict, event_type: str, body: dict[str, Any]) -> None:
        self._notify(event_type, body)


@pytest.fixture
def away(monkeypatch: pytest.MonkeyPatch) -> AwayBroker:
    """Every oslo Notifier made now is an :class:`AwayBroker` (returned)."""
    broker = AwayBroker()
    monkeypatch.setattr(notifications.messaging, "get_notification_transport", lambda *a, **k: None)
    monkeypatch.setattr(notifications.messaging, "Notifier", lambda *a, **k: broker)
    return broker


def _notify_many(notifier: notifications.Notifier, count: int) -> threading.Event:
    done = threading.Event()

    def requests() -> None:
        for i in range(count):
            notifier.info("instance.create.start", {"uuid": "server-%d" % i})
        done.set()

    threading.Thread(target=requests, daemon=True).start()
    return done


def test_notifying_does_not_wait_for_an_absent_broker(
    fresh_conf: cfg.ConfigOpts, away: AwayBroker
) -> None:
    broker = away
    notifier = notifications.Notifier(fresh_conf, "test")
    done = _notify_many(notifier, 50)
    assert done.wait(HANG), "the requests waited for the broker"
    assert broker.waiting.wait(HANG)
    assert not notifier.flush(0)
    broker.back()
    assert notifier.flush(HANG)
    # Nothing lost, in the order notified.
    assert broker.sent == [("instance.create.start", "server-%d" % i) for i in range(50)]


def test_a_full_queue_drops_and_says_so_once(
    fresh_conf: cfg.ConfigOpts, away: AwayBroker, caplog: pytest.LogCaptureFixture
) -> None:
    broker = away
    notifier = notifications.Notifier(fresh_conf, "test", queue_length=5)
    with caplog.at_level(logging.ERROR, logger=notifications.__name__):
        assert _notify_many(notifier, 20).wait(HANG)
        full = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(full) == 1, [r.getMessage() for r in caplog.records]
        broker.back()
        assert notifier.flush(HANG)
        # One more notification after the outage says how many were lost.
        notifier.info("instance.create.start", {"uuid": "after"})
        assert notifier.flush(HANG)
    assert len(broker.sent) == 6 and broker.sent[-1][1] == "after"
    assert any("15 notifications were dropped" in r.getMessage() for r in caplog.records)


def test_a_failing_notification_does_not_stop_the_sender(
    fresh_conf: cfg.ConfigOpts, away: AwayBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = away
    real = broker.info

    def flaky(ctxt: dict, event_type: str, body: dict[str, Any]) -> None:
        if body["instance"]["uuid"] == "bad":
            raise ValueError("cannot serialize")
        real(ctxt, event_type, body)

    monkeypatch.setattr(broker, "info", flaky)
    broker.back()
    notifier = notifications.Notifier(fresh_conf, "test")
    notifier.info("instance.create.start", {"uuid": "bad"})
    notifier.info("instance.create.start", {"uuid": "good"})
    assert notifier.flush(HANG)
    assert broker.sent == [("instance.create.start", "good")]


def test_disabled_sends_nothing(fresh_conf: cfg.ConfigOpts, away: AwayBroker) -> None:
    broker = away
    fresh_conf.set_override("enabled", False, "notifications")
    notifier = notifications.Notifier(fresh_conf, "test")
    notifier.info("instance.create.start", {"uuid": "x"})
    assert notifier.flush(0)
    assert broker.sent == []
    fresh_conf.clear_override("enabled", "notifications")
