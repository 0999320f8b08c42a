"""The agent's report after a broker outage leaves at once, and an outage is
one log line, not a traceback per report (issue 13 items 8 and 12)."""

from __future__ import annotations

import logging
import threading

import pytest

from compute_driver import exception
from compute_driver.agent import service


class Bus:
    """A report that the bus refuses ``down`` times, then takes."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.sent = 0
        self.tries = 0

    def report(self) -> None:
        self.tries += 1
        if self.tries <= self.down:
            raise exception.MessagingError(service="agent_reports", reason="Connection refused")
        self.sent += 1


def test_a_refused_report_is_tried_again_until_it_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = Bus(down=5)
    with caplog.at_level(logging.WARNING, logger=service.__name__):
        service.report_until_sent(bus.report, threading.Event(), delay=0)
    assert bus.sent == 1 and bus.tries == 6
    lines = [r for r in caplog.records if r.name == service.__name__]
    assert [r.exc_info for r in lines] == [None, None]
    assert "Cannot report to the scheduler" in lines[0].getMessage()
    assert "after 5 failed tries" in lines[1].getMessage()


def test_stopping_ends_the_tries() -> None:
    stopped = threading.Event()
    bus = Bus(down=10**9)

    def refuse_then_stop() -> None:
        stopped.set()
        bus.report()

    service.report_until_sent(refuse_then_stop, stopped, delay=0)
    assert bus.sent == 0


def test_another_failure_waits_for_the_next_period(caplog: pytest.LogCaptureFixture) -> None:
    tries = []

    def hypervisor_away() -> None:
        tries.append(1)
        raise exception.HypervisorUnavailable(
            uri="qemu:///system", reason="libvirtd is not running"
        )

    with caplog.at_level(logging.WARNING, logger=service.__name__):
        service.report_until_sent(hypervisor_away, threading.Event(), delay=0)
    assert len(tries) == 1
    assert "libvirtd is not running" in caplog.records[-1].getMessage()
