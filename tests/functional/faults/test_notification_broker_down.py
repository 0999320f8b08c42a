"""Creates are answered while the notifications' broker is down (issue 13 item 7).

RPC goes through the shared broker (never stopped); notifications go to a
private node, whose broker is stopped once the scheduler is connected to it.
oslo's Notifier then waited for it in the RPC worker (it retries for ever):
every create hung in instance.create.start.
"""

from __future__ import annotations

import uuid as uuidlib

from tests.functional import private_rabbit
from tests.functional.faults import scenario
from tests.functional.scheduler.sim_cloud import sim_cloud


def test_creates_answer_while_the_notification_broker_is_down(
    broker: private_rabbit.PrivateRabbit,
) -> None:
    vhost = "cd-notify-" + uuidlib.uuid4().hex[:6]
    broker.add_vhost(vhost)
    try:
        with sim_cloud(down_time=scenario.DOWN_TIME) as cloud:
            with open(cloud.config_file("sched-0"), "a") as f:
                f.write(
                    "\n[oslo_messaging_notifications]\ntransport_url = %s\n" % broker.url(vhost)
                )
            _hosts, flavor, image = scenario.start(cloud, hosts=1)
            # Connected: a create notifies through the private broker.
            before = scenario.create_and_settle(cloud, 1, flavor, image)
            assert before["states"] == {"active": 1}, before
            broker.stop_app()
            try:
                figures = scenario.create_and_settle(cloud, 6, flavor, image, threads=3)
            finally:
                broker.start_app()
            scenario.report("notification broker down", figures)
            assert figures["refused"] == {}, figures
            assert figures["states"] == {"active": 6}, figures
    finally:
        broker.delete_vhost(vhost)
