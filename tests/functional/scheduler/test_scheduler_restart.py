"""The scheduler restarts in the middle of 100 creates: every server still settles.

The client retries each create by UUID while no scheduler answers, as an
API service would. Whatever the restart interrupted (a request taken but
not stored, a server stored but not placed, placed but its build never
sent), each server ends ACTIVE or ERROR with no task in flight, and the
claims equal what the live servers hold.
"""

from __future__ import annotations

import collections
import signal
import threading

import pytest

from tests.functional.scheduler.sim_cloud import FLAVOR, create_many, host_usage, sim_cloud

HOSTS = 12
CREATES = 100
#: Answers the client has had when the scheduler is stopped.
RESTART_AFTER = 30
PROJECT = "restart"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_restart_during_creates(sig: signal.Signals) -> None:
    with sim_cloud() as cloud:
        cloud.start_scheduler()
        names = cloud.start_agents(HOSTS)
        cloud.wait_for_hosts(names)
        flavor, image = cloud.prepare_catalog()

        reached = threading.Event()
        restarted = threading.Event()

        def restart() -> None:
            reached.wait()
            cloud.stop("sched-0", sig)
            cloud.start_scheduler(wait=False)
            restarted.set()

        def on_answer(answers: int) -> None:
            if answers >= RESTART_AFTER:
                reached.set()

        restarter = threading.Thread(target=restart, daemon=True)
        restarter.start()
        records, errors = create_many(
            cloud, CREATES, flavor, image, PROJECT, threads=16, on_answer=on_answer
        )
        restarter.join(60)
        assert restarted.is_set(), "the scheduler was not restarted"
        cloud.wait_for_log("sched-0", "Server ", timeout=30)  # the new one serves

        asked = set(records) | set(errors)
        assert len(asked) == CREATES
        servers = cloud.wait_settled(PROJECT, asked, timeout=90)
        states = collections.Counter(s["vm_state"] for s in servers.values())
        print("after the restart: %s; create errors: %s" % (dict(states), len(errors)))
        # Every create that got an answer left a record; those that got none
        # were retried until they did.
        assert set(servers) == asked, "creates without a record: %s" % (asked - set(servers))
        for error in errors.values():
            assert servers[_uuid_of(errors, error)]["vm_state"] == "error"

        live = [s for s in servers.values() if s["vm_state"] == "active"]
        per_host = collections.Counter(s["host"] for s in live)
        hosts = [h for h in cloud.call(cloud.client.list_hosts) if h["name"] in names]
        assert host_usage(hosts) == {
            n: (per_host[n] * FLAVOR["vcpus"], per_host[n] * FLAVOR["memory_mb"], 0) for n in names
        }

        cloud.delete_all(PROJECT)
        hosts = [h for h in cloud.call(cloud.client.list_hosts) if h["name"] in names]
        assert host_usage(hosts) == {n: (0, 0, 0) for n in names}


def _uuid_of(errors: dict, error: Exception) -> str:
    return next(u for u, e in errors.items() if e is error)
