"""What the fault scenarios share: a small simulated cloud, figures printed as JSON."""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from typing import Any

from compute_driver import exception
from compute_driver.client import Client
from tests.functional.private_rabbit import PrivateRabbit
from tests.functional.scheduler.sim_cloud import SimCloud, create_many

#: Seconds of silence that make a host down in the scenarios' clouds.
DOWN_TIME = 5
HOSTS = 3
#: A guard against a hang, never a measure of speed.
HANG = 120


def start(cloud: SimCloud, hosts: int = HOSTS) -> tuple[list[str], str, str]:
    """A scheduler and ``hosts`` agents, all up; returns (host names, flavor, image)."""
    cloud.start_scheduler()
    names = cloud.start_agents(hosts)
    cloud.wait_for_hosts(names)
    flavor, image = cloud.prepare_catalog()
    return names, flavor, image


def create_and_settle(
    cloud: SimCloud, count: int, flavor: str, image: str, threads: int = 8
) -> dict[str, Any]:
    """Create ``count`` servers at once and wait until each is settled.

    :returns: figures: answers by error code, servers by state, seconds
        until every create was answered and until every server settled.
    """
    project = "faults-" + uuidlib.uuid4().hex[:6]
    began = time.monotonic()
    records, errors = create_many(cloud, count, flavor, image, project, threads)
    answered = time.monotonic()
    settled = cloud.wait_settled(project, set(records), timeout=HANG)
    states: dict[str, int] = {}
    for record in settled.values():
        states[record["vm_state"]] = states.get(record["vm_state"], 0) + 1
    refused: dict[str, int] = {}
    for error in errors.values():
        code = error.code if isinstance(error, exception.ComputeDriverError) else "?"
        refused[code] = refused.get(code, 0) + 1
    return {
        "project": project,
        "creates": count,
        "refused": refused,
        "host_down_refusals": sum("down (last report" in str(e) for e in errors.values()),
        "states": states,
        "errors": sorted({str(e)[:300] for e in errors.values()})[:3],
        "faults": sorted({r.get("fault") or "" for r in settled.values()} - {""})[:3],
        "answered_seconds": round(answered - began, 1),
        "seconds": round(time.monotonic() - began, 1),
    }


def broker_outage(
    cloud: SimCloud, broker: PrivateRabbit, outage: float, creates: int, flavor: str, image: str
) -> dict[str, Any]:
    """Stop ``broker`` for ``outage`` seconds, then create ``creates`` servers
    the moment the scheduler answers again, and wait until they settle.

    :returns: :func:`create_and_settle`'s figures, with the outage's length,
        the seconds until the scheduler answered and until every server settled
        (``recovery_seconds``), both from the broker's return.
    """
    # NOTE: a short timeout: a call sent before the scheduler declared its
    # queue again is lost, and is sent again sooner.
    cloud.client  # noqa: B018 - loads the client's configuration
    probe = Client(timeout=1, admin=True)
    broker.stop_app()
    try:
        # NOTE: the fault's length, not a wait for an outcome.
        time.sleep(outage)
    finally:
        broker.start_app()
    back = time.monotonic()
    cloud.call(probe.list_hosts, timeout=HANG)
    answering = time.monotonic()
    figures = create_and_settle(cloud, creates, flavor, image)
    figures["outage_seconds"] = outage
    figures["scheduler_answers_after"] = round(answering - back, 1)
    figures["recovery_seconds"] = round(time.monotonic() - back, 1)
    return figures


def report(scenario: str, figures: dict[str, Any]) -> None:
    """Print the figures of one run as one JSON line."""
    print("FAULT-FIGURES " + json.dumps({"scenario": scenario, **figures}, sort_keys=True))
