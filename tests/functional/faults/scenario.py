"""What the fault scenarios share: a small simulated cloud, figures printed as JSON."""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from typing import Any

from compute_driver import exception
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
        "creates": count,
        "refused": refused,
        "host_down_refusals": sum("down (last report" in str(e) for e in errors.values()),
        "states": states,
        "errors": sorted({str(e)[:300] for e in errors.values()})[:3],
        "faults": sorted({r.get("fault") or "" for r in settled.values()} - {""})[:3],
        "answered_seconds": round(answered - began, 1),
        "seconds": round(time.monotonic() - began, 1),
    }


def report(scenario: str, figures: dict[str, Any]) -> None:
    """Print the figures of one run as one JSON line."""
    print("FAULT-FIGURES " + json.dumps({"scenario": scenario, **figures}, sort_keys=True))
