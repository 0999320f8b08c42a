"""Broker outages of several lengths under a scheduler and simulated hosts: what recovers, how fast.

The long version of tests/functional/faults/test_broker_outage.py (issue 13).
A private RabbitMQ node (never the shared broker) carries one scheduler and
``--hosts`` agents on ``test:///default``. For each length in ``--outages``
its broker is stopped that long, then ``--servers`` creates start the moment
the scheduler answers again; each must be placed (none refused "host down")
and end ACTIVE. Between outages every server is deleted.

Figures per outage: creates refused (and those refused "host down"), servers
not ACTIVE, seconds until the scheduler answered and until every server
settled after the broker's return (``recovery_s``; target < 15 s).

Run::

    .venv/bin/python bench/faults.py [--hosts N] [--servers N] [--outages 7,25,96]
        [--down-time S] [--report-interval S] [--smoke]

The last line of the output is one JSON object with ``host_down_refusals``,
``refused``, ``not_active`` (all targets 0) and ``max_recovery_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from typing import Any

warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")
warnings.filterwarnings("ignore", message=r"Using the 'executor' argument is deprecated")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.functional import private_rabbit  # noqa: E402
from tests.functional.faults import scenario  # noqa: E402
from tests.functional.scheduler.sim_cloud import SERVERS_PER_HOST, sim_cloud  # noqa: E402

TARGET_RECOVERY_S = 15.0


def say(text: str) -> None:
    print("==> " + text, flush=True)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="faults-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10, help="simulated hosts (10)")
    parser.add_argument("--servers", type=int, default=80, help="creates after each outage (80)")
    parser.add_argument(
        "--outages", default="7,25,96", help="seconds the broker is stopped, in turn (7,25,96)"
    )
    parser.add_argument("--down-time", type=int, default=60, help="service_down_time (60)")
    parser.add_argument("--report-interval", type=int, default=10, help="report_interval (10)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a test run of about half a minute (options given explicitly still win): "
        "--hosts 2 --servers 4 --outages 6 --down-time 4 --report-interval 1",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(hosts=2, servers=4, outages="6", down_time=4, report_interval=1)
        args = parser.parse_args(argv)
    args.outages = [float(x) for x in args.outages.split(",") if x.strip()]
    if args.servers > args.hosts * SERVERS_PER_HOST:
        parser.error("--servers %d do not fit in %d hosts" % (args.servers, args.hosts))
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    why = private_rabbit.available()
    if why is not None:
        print("faults-bench: error: a private RabbitMQ node %s" % why, file=sys.stderr)
        return 1
    runs: list[dict[str, Any]] = []
    node = private_rabbit.PrivateRabbit(tempfile.mkdtemp(prefix="cd-rabbit-bench-"))
    try:
        node.start()
        with sim_cloud(
            broker=node, down_time=args.down_time, report_interval=args.report_interval
        ) as cloud:
            cloud.start_scheduler()
            names = cloud.start_agents(args.hosts, prefix="bench")
            cloud.wait_for_hosts(names)
            flavor, image = cloud.prepare_catalog()
            say("%d hosts up; outages of %s s" % (len(names), args.outages))
            for outage in args.outages:
                figures = scenario.broker_outage(cloud, node, outage, args.servers, flavor, image)
                scenario.report("broker stopped %g s" % outage, figures)
                runs.append(figures)
                cloud.delete_all(figures["project"])
    except Exception as exc:  # noqa: BLE001 - one line and status 1 for any failure
        print("faults-bench: error: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        return 1
    finally:
        node.remove()
    summary = {
        "host_down_refusals": sum(r["host_down_refusals"] for r in runs),
        "refused": sum(sum(r["refused"].values()) for r in runs),
        "not_active": sum(n for r in runs for state, n in r["states"].items() if state != "active"),
        "max_recovery_s": max(r["recovery_seconds"] for r in runs),
        "recovery_s": {"%g" % r["outage_seconds"]: r["recovery_seconds"] for r in runs},
        "hosts": args.hosts,
        "servers": args.servers,
        "down_time_s": args.down_time,
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    met = summary["max_recovery_s"] < TARGET_RECOVERY_S and not summary["refused"]
    say(
        "target: nothing refused, recovery < %g s: %s"
        % (TARGET_RECOVERY_S, "met" if met else "MISSED")
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
