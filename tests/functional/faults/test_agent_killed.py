"""The one agent of a cloud killed: its host is down for placement once silent
for ``service_down_time``, although the scheduler then hears nobody at all.

The guard of issue 13 item 8's fix: a scheduler that hears no report
judges no host down only when it cannot reach its broker either; here the
broker answers, so the silence is the host's.
"""

from __future__ import annotations

import signal
import time

import pytest

from compute_driver import exception
from tests.functional import private_rabbit
from tests.functional.faults import scenario
from tests.functional.scheduler.sim_cloud import sim_cloud


def test_a_silent_host_is_down_while_the_broker_answers(
    broker: private_rabbit.PrivateRabbit,
) -> None:
    with sim_cloud(broker=broker, down_time=scenario.DOWN_TIME) as cloud:
        (host,), flavor, image = scenario.start(cloud, hosts=1)
        cloud.stop(host, signal.SIGKILL)
        deadline = time.monotonic() + scenario.HANG
        while True:
            try:
                cloud.call(
                    lambda: cloud.client.create_server(
                        "after-" + host, flavor, image, project="faults", host=host
                    )
                )
            except exception.NoValidHost as exc:
                # The store says down first; placement may still see it up
                # for a check or two: ask until it refuses.
                assert "down (last report" in exc.message, exc.message
                break
            if time.monotonic() > deadline:
                pytest.fail("a create was still placed on %s, dead since long" % host)
            time.sleep(1)
