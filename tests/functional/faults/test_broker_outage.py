"""The broker stopped for less and for more than ``service_down_time``
(issue 13 item 8): once it is back, no create is refused "host down", none
hangs, and every one ends ACTIVE; the recovery time is printed.

After an outage longer than the down time every host was silent: the
scheduler refused creates "host down" until each agent's next report.
"""

from __future__ import annotations

import pytest

from tests.functional import private_rabbit
from tests.functional.faults import scenario
from tests.functional.scheduler.sim_cloud import sim_cloud

CREATES = 24
#: Agents report every 3 s, and are down after 8 s of silence: the window
#: between the scheduler's return and the agents' next reports, when main
#: refused creates "host down", is seconds wide.
REPORT_INTERVAL = 3
DOWN_TIME = 8


@pytest.mark.parametrize(
    "outage", [3, DOWN_TIME + 4], ids=["shorter-than-down-time", "longer-than-down-time"]
)
def test_after_a_broker_outage_every_create_is_placed(
    broker: private_rabbit.PrivateRabbit, outage: int
) -> None:
    with sim_cloud(broker=broker, down_time=DOWN_TIME, report_interval=REPORT_INTERVAL) as cloud:
        _hosts, flavor, image = scenario.start(cloud)
        figures = scenario.broker_outage(cloud, broker, outage, CREATES, flavor, image)
        scenario.report("broker stopped %d s" % outage, figures)
        cloud.check_alive()
        assert figures["host_down_refusals"] == 0, figures
        assert figures["refused"] == {}, figures
        assert figures["states"] == {"active": CREATES}, figures
