"""Scheduling at scale: thousands of servers onto a hundred simulated hosts, through RabbitMQ.

What is measured, on a RabbitMQ vhost the bench makes for itself (and
deletes at the end, also after a failure):

* one scheduler on SQLite: ``--hosts`` simulated hosts (default 100), each a
  ``compute-agent`` process on libvirt's ``test:///default`` driver (one
  simulated hypervisor per process; see
  ``tests/functional/scheduler/sim_cloud.py`` for why processes), and one
  ``compute-scheduler`` process. ``--client-threads`` threads of this
  process call ``Client.create_server`` for ``--servers`` servers (default
  5,000) at once.
* two schedulers on one PostgreSQL database (a private cluster started
  and removed by the bench), the same hosts, the same load.

For each: placements per second (creates answered, i.e. stored, claimed
and cast to a host, from the first call to the last answer), servers per
second to ACTIVE (from the first call to the last server ACTIVE), and the
create-to-ACTIVE latency of each server (p50, p99). The targets are at
least 100 servers/s to ACTIVE and p99 under 2 s.

NOTE: when a server became ACTIVE is read from the scheduler's database
(``instances.updated_at`` of the row the agent's report made ACTIVE), not
by polling the API: a ``list_servers`` of 5,000 servers costs the scheduler
seconds of CPU, which would load what is measured. The bench polls the
database every 0.1 s for rows that turned ACTIVE and keeps the
``updated_at`` it first saw. Both clocks are this machine's.

Run as root with RabbitMQ up (libvirtd is not needed)::

    .venv/bin/python bench/schedule.py [--servers N] [--hosts N] [--skip-postgres] [--smoke]

The last line of the output is one JSON object: ``servers_per_s``,
``p50_s``, ``p99_s``, ``two_schedulers_servers_per_s``, then the figures
behind them. The exit status is 0 whatever the figures, 1 on an error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import threading
import time
import uuid as uuidlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")
warnings.filterwarnings("ignore", message=r"Using the 'executor' argument is deprecated")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import sqlalchemy as sa  # noqa: E402

from compute_driver import exception  # noqa: E402
from compute_driver.client import Client  # noqa: E402
from compute_driver.scheduler.models import Instance  # noqa: E402
from tests.functional.scheduler.postgres import running_postgres  # noqa: E402
from tests.functional.scheduler.sim_cloud import SimCloud, sim_cloud  # noqa: E402

TARGET_SERVERS_PER_S = 100.0
TARGET_P99_S = 2.0
#: 1 vCPU, 16 MiB, no disk: test:///default (16 CPUs, 3072 MiB) takes 64 at ratio 4.
FLAVOR = ("bench.1c", 1, 16, 0)
CPU_RATIO = 4.0
DB_POLL_INTERVAL = 0.1
CREATE_TIMEOUT = 300


def say(text: str) -> None:
    print("==> " + text, flush=True)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="schedule-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=5000, help="servers per phase (5000)")
    parser.add_argument("--hosts", type=int, default=100, help="simulated hosts (100)")
    parser.add_argument(
        "--client-threads", type=int, default=32, help="threads calling create_server (32)"
    )
    parser.add_argument(
        "--builds", type=int, default=4, help="each agent's [agent] max_concurrent_builds (4)"
    )
    parser.add_argument("--skip-postgres", action="store_true", help="one scheduler only")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a test run of a few seconds (options given explicitly still win): "
        "--servers 4 --hosts 2 --client-threads 2 --builds 2",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(servers=4, hosts=2, client_threads=2, builds=2)
        args = parser.parse_args(argv)
    if args.servers > args.hosts * 16 * CPU_RATIO:
        parser.error("more servers than the hosts hold (%d each)" % (16 * CPU_RATIO))
    return args


def _percentile(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    rank = max(1, -(-pct * len(ordered) // 100))
    return ordered[rank - 1]


@dataclass
class Run:
    """Wall-clock times (time.time()) of each server's create call, answer and ACTIVE."""

    asked: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    active: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, float]:
        first = min(self.asked.values())
        latencies = [self.active[u] - self.asked[u] for u in self.active]
        return {
            "placements_per_s": len(self.answered) / (max(self.answered.values()) - first),
            "servers_per_s": len(self.active) / (max(self.active.values()) - first),
            "p50_s": _percentile(latencies, 50),
            "p99_s": _percentile(latencies, 99),
            "max_s": max(latencies),
        }


def _epoch(value: datetime.datetime) -> float:
    return value.replace(tzinfo=datetime.UTC).timestamp()


def watch_active(url: str, project: str, run: Run, total: int, stop: threading.Event) -> None:
    """Note when each server of ``project`` turned ACTIVE, from the scheduler's database."""
    engine = sa.create_engine(url)
    try:
        while not stop.is_set() and len(run.active) < total:
            query = sa.select(Instance.uuid, Instance.updated_at).where(
                Instance.project == project,
                Instance.vm_state == "active",
                Instance.task_state.is_(None),
            )
            with engine.connect() as conn:
                for uuid, updated_at in conn.execute(query):
                    run.active.setdefault(uuid, _epoch(updated_at))
            stop.wait(DB_POLL_INTERVAL)
    finally:
        engine.dispose()


def create_all(cloud: SimCloud, url: str, args: argparse.Namespace, tag: str) -> Run:
    """Create ``--servers`` servers at once; return when all are ACTIVE.

    :raises BuildFailed: a server went to ERROR (the hosts have room for all).
    """
    flavor = cloud.call(lambda: cloud.client.create_flavor(*FLAVOR))["name"]
    # NOTE: a long timeout: all creates are asked for at once, and the
    # last ones wait in the scheduler's queue for the first ones.
    client = Client(timeout=CREATE_TIMEOUT, admin=True)
    # NOTE: in the cloud's [image] import_path, named relative to it.
    os.makedirs(os.path.join(cloud.base, "import"), exist_ok=True)
    path = os.path.join(cloud.base, "import", "bench.raw")
    with open(path, "wb") as f:
        f.truncate(1024 * 1024)
    image = client.import_image("bench-" + tag, "bench.raw")["uuid"]
    project = "bench-" + tag
    run = Run()
    uuids = [str(uuidlib.uuid4()) for _ in range(args.servers)]
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_active, args=(url, project, run, len(uuids), stop), daemon=True
    )

    def create(uuid: str) -> None:
        run.asked[uuid] = time.time()
        client.create_server("b-" + uuid[:8], flavor, image, project=project, uuid=uuid)
        run.answered[uuid] = time.time()

    watcher.start()
    try:
        with ThreadPoolExecutor(args.client_threads, thread_name_prefix="create") as pool:
            list(pool.map(create, uuids))
        say(
            "%d creates answered in %.1f s"
            % (len(run.answered), max(run.answered.values()) - min(run.asked.values()))
        )
        wait = max(120.0, args.servers / 10)
        deadline = time.monotonic() + wait
        while len(run.active) < len(uuids):
            if time.monotonic() > deadline:
                errors = [s for s in client.list_servers(project=project) if s["fault"]]
                raise exception.MessagingTimeout(
                    service="%d servers to be ACTIVE (%d errors, e.g. %s)"
                    % (len(uuids) - len(run.active), len(errors), errors[:1]),
                    timeout=wait,
                )
            time.sleep(0.2)
    finally:
        stop.set()
        watcher.join(10)
    cloud.delete_all(project, timeout=max(300.0, args.servers / 10))
    return run


def phase(
    cloud: SimCloud,
    url: str,
    schedulers: list[str],
    names: list[str],
    args: argparse.Namespace,
    tag: str,
) -> Run:
    """Start ``schedulers`` on ``url``, create every server, stop them."""
    cloud.database = url
    for name in schedulers:
        if name not in cloud.procs:
            cloud.start_scheduler(name)
    cloud.wait_for_hosts(names, timeout=300)
    say("%d hosts up; scheduler(s) %s on %s" % (len(names), ", ".join(schedulers), url))
    run = create_all(cloud, url, args, tag)
    for name in schedulers:
        cloud.stop(name)
    return run


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    tag = uuidlib.uuid4().hex[:6]
    result: dict[str, Any] = {}
    try:
        with sim_cloud(
            report_interval=10, down_time=60, builds=args.builds, cpu_ratio=CPU_RATIO
        ) as cloud:
            sqlite_url = "sqlite:///%s/scheduler.sqlite" % cloud.base
            cloud.database = sqlite_url
            # NOTE: the scheduler first: an agent that starts before it
            # reconciles late, while builds arrive, and fails them (see the
            # report). The agents outlive this scheduler: they keep no
            # database and report to whichever scheduler listens.
            cloud.start_scheduler("sched-sqlite")
            names = cloud.start_agents(args.hosts, prefix="bench")
            say("started %d agents (test:///default each)" % len(names))
            one = phase(cloud, sqlite_url, ["sched-sqlite"], names, args, tag + "a")
            result.update(one.figures())
            say("one scheduler, SQLite: %s" % _fmt(one.figures()))
            if not args.skip_postgres:
                with running_postgres() as postgres:
                    url = postgres.create_database("bench")
                    two = phase(cloud, url, ["sched-pg-a", "sched-pg-b"], names, args, tag + "b")
                figures = two.figures()
                say("two schedulers, PostgreSQL: %s" % _fmt(figures))
                result.update({"two_schedulers_" + k: v for k, v in figures.items()})
    except Exception as exc:  # noqa: BLE001 - one line and status 1 for any failure
        print("schedule-bench: error: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        return 1
    met = result["servers_per_s"] >= TARGET_SERVERS_PER_S and result["p99_s"] < TARGET_P99_S
    say(
        "target >= %g servers/s and p99 < %g s: %s"
        % (TARGET_SERVERS_PER_S, TARGET_P99_S, "met" if met else "MISSED")
    )
    summary = {
        "servers_per_s": round(result["servers_per_s"], 1),
        "p50_s": round(result["p50_s"], 3),
        "p99_s": round(result["p99_s"], 3),
        "two_schedulers_servers_per_s": (
            round(result["two_schedulers_servers_per_s"], 1)
            if "two_schedulers_servers_per_s" in result
            else None
        ),
    }
    summary.update({k: round(v, 3) for k, v in result.items() if k not in summary})
    summary.update(
        {
            "servers": args.servers,
            "hosts": args.hosts,
            "client_threads": args.client_threads,
            "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
    )
    print(json.dumps(summary))
    return 0


def _fmt(figures: dict[str, float]) -> str:
    return ", ".join("%s %.3g" % item for item in figures.items())


if __name__ == "__main__":
    sys.exit(main())
