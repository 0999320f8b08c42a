"""Round-trip time of our compute RPC ``call`` against a bare oslo.messaging call.

What is measured, in one process and on one broker:

* ours: ``ComputeAPI(conf).ping(host)`` (our client: ``prepare``, a request
  context, error mapping) answered by the real ``ComputeManager.ping`` (the
  ``rpc_method`` decorator and the schema check) behind a server made by
  ``compute_driver.rpc.transport.get_server``, exactly as the agent makes it
  (topic ``compute``, server = a unique bench host name);
* bare: a plain ``get_rpc_client(...).call({}, "ping")`` answered by a plain
  ``get_rpc_server(..., executor="threading")`` endpoint returning a dict.

Both sides get warm-up calls first, then the same number of timed calls,
interleaved in rounds (the order alternates each round) so that drift of
the broker or the host affects both. The figure is the ratio of the median
per-call times, ours/bare; the target is at most 1.5.

Run, with RabbitMQ up::

    .venv/bin/python bench/rpc_overhead.py [--calls N] [--transport-url URL] [--smoke]

The last line of the output is one JSON object with ``rpc_call_ratio``,
``ours_ms`` and ``bare_ms``. The exit status is 0 whatever the ratio, 1 on
an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any, cast

# NOTE: oslo.messaging imports oslo.service, which imports eventlet for its
# optional backend and warns; we use native threads (as the services do).
warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")
# NOTE: the bare server passes executor="threading" on purpose, as our
# transport.get_server does, so both sides are built the same way.
warnings.filterwarnings("ignore", message=r"Using the 'executor' argument is deprecated")

import kombu  # noqa: E402
import oslo_messaging as messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402

from compute_driver import config  # noqa: E402
from compute_driver.agent.host import AgentHost  # noqa: E402
from compute_driver.agent.manager import ComputeManager  # noqa: E402
from compute_driver.rpc import compute_api, transport  # noqa: E402
from compute_driver.rpc.agent_reports_api import AgentReportsAPI  # noqa: E402
from compute_driver.virt.base import ComputeDriver  # noqa: E402

LOG = logging.getLogger("rpc-bench")

DEFAULT_TRANSPORT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
TARGET_RATIO = 1.5
#: Seconds a call may take before the bench counts it as an error.
CALL_TIMEOUT = 10


class _Unused:
    """Stands in for a collaborator that ``ping`` must never touch."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        raise AssertionError("ping touched %s.%s" % (self._name, attr))


class BareEndpoint:
    """The plainest oslo.messaging endpoint: no decorator, no schema."""

    target = messaging.Target(version="1.0")

    def ping(self, ctxt: dict) -> dict[str, str]:
        return {"service": "bare", "version": "1.0"}


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rpc-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="timed calls per side (default 500)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds the timed calls are split into, alternating which side goes first (default 5)",
    )
    parser.add_argument(
        "--warmup", type=int, default=50, help="untimed calls per side before timing (default 50)"
    )
    parser.add_argument(
        "--transport-url",
        default=DEFAULT_TRANSPORT_URL,
        help="oslo.messaging transport URL (default %(default)s)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a test run of a few seconds (options given explicitly still win): "
        "--calls 20 --rounds 2 --warmup 2",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(calls=20, rounds=2, warmup=2)
        args = parser.parse_args(argv)
    if args.calls < 1 or args.rounds < 1 or args.warmup < 0 or args.rounds > args.calls:
        parser.error("need calls >= rounds >= 1 and warmup >= 0")
    return args


def _load_conf(transport_url: str, host: str) -> cfg.ConfigOpts:
    """The global CONF, loaded the way services load it, from a temporary file."""
    fd, path = tempfile.mkstemp(prefix="rpc-bench-", suffix=".conf")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("[DEFAULT]\ntransport_url = %s\nhost = %s\n" % (transport_url, host))
        return config.load(["--config-file", path], "rpc-bench", default_config_files=[])
    finally:
        # NOTE: oslo.config has parsed the file by now; nothing rereads it.
        os.unlink(path)


def _time_calls(call: Callable[[], Any], count: int, into: list[float]) -> None:
    for _ in range(count):
        start = time.perf_counter()
        call()
        into.append((time.perf_counter() - start) * 1000.0)


def _broker(conf: cfg.ConfigOpts) -> kombu.Connection:
    """A plain AMQP connection to the first broker of ``transport_url``."""
    url = messaging.TransportURL.parse(conf)
    if not url.hosts or url.transport not in ("rabbit", "amqp"):
        raise ValueError("%s is not a rabbit:// URL with a host" % conf.transport_url)
    host = url.hosts[0]
    return kombu.Connection(
        hostname=host.hostname,
        port=host.port,
        userid=host.username,
        password=host.password,
        virtual_host=url.virtual_host or "/",
        connect_timeout=5,
    )


def _check_broker(conf: cfg.ConfigOpts) -> None:
    """Fail fast when the broker is unreachable.

    NOTE: oslo.messaging retries a refused connection forever, which would
    hang the bench instead of failing it.
    """
    with _broker(conf) as conn:
        conn.ensure_connection(max_retries=1)


def _delete_queues(conf: cfg.ConfigOpts, names: list[str]) -> None:
    """Remove the uniquely named queues we declared (they do not expire by themselves).

    Best effort: a queue left behind is litter on the broker, not a bench failure.
    """
    try:
        with _broker(conf) as conn:
            channel = conn.default_channel
            for name in names:
                channel.queue_delete(name, if_unused=True)
    except Exception as exc:  # noqa: BLE001 - see docstring
        LOG.warning("Could not delete bench queues %s: %s", ", ".join(names), exc)


def run(args: argparse.Namespace) -> dict[str, list[float]]:
    tag = uuid.uuid4().hex[:8]
    host = "rpc-bench-" + tag
    bare_topic = "rpc-bench-bare-" + tag
    conf = _load_conf(args.transport_url, host)
    _check_broker(conf)

    manager = ComputeManager(
        AgentHost(
            conf,
            cast(ComputeDriver, _Unused("driver")),
            {},
            {},
            cast(AgentReportsAPI, _Unused("agent_reports")),
        )
    )
    bare_target = messaging.Target(topic=bare_topic, server=host)
    bare_transport: messaging.Transport | None = None
    started: list[messaging.MessageHandlingServer] = []
    try:
        ours_server = transport.get_server(
            conf,
            messaging.Target(topic=compute_api.TOPIC, server=host),
            [manager],
        )
        bare_transport = messaging.get_rpc_transport(conf)
        bare_server = messaging.get_rpc_server(
            bare_transport, bare_target, [BareEndpoint()], executor="threading"
        )
        # NOTE: as the agent starts its server: the pool size is given at
        # start, since oslo.messaging's own option is one per process.
        ours_server.start(override_pool_size=conf.agent.rpc_workers)
        started.append(ours_server)
        bare_server.start()
        started.append(bare_server)

        ours_client = compute_api.ComputeAPI(conf, timeout=CALL_TIMEOUT)
        bare_client = messaging.get_rpc_client(bare_transport, bare_target, timeout=CALL_TIMEOUT)

        def ours() -> Any:
            return ours_client.ping(host)

        def bare() -> Any:
            return bare_client.call({}, "ping")

        # NOTE: check once that each side really reaches its own server.
        expected = {"service": "compute-agent", "host": host, "version": "1.0"}
        for side, call, want in (
            ("our", ours, expected),
            ("bare", bare, {"service": "bare", "version": "1.0"}),
        ):
            got = call()
            if got != want:
                raise RuntimeError("%s ping answered %r, expected %r" % (side, got, want))

        for _ in range(args.warmup):
            bare()
            ours()

        times: dict[str, list[float]] = {"bare": [], "ours": []}
        sides = {"bare": bare, "ours": ours}
        base, extra = divmod(args.calls, args.rounds)
        for rnd in range(args.rounds):
            count = base + (1 if rnd < extra else 0)
            order = ("bare", "ours") if rnd % 2 == 0 else ("ours", "bare")
            medians = {}
            for side in order:
                before = len(times[side])
                _time_calls(sides[side], count, times[side])
                medians[side] = statistics.median(times[side][before:])
            print(
                "round %d (%s first, %d calls each): bare %.3f ms, ours %.3f ms, ratio %.2f"
                % (
                    rnd + 1,
                    order[0],
                    count,
                    medians["bare"],
                    medians["ours"],
                    medians["ours"] / medians["bare"],
                )
            )
    finally:
        for server in started:
            server.stop()
        for server in started:
            server.wait()
        transport.cleanup()
        if bare_transport is not None:
            bare_transport.cleanup()
        _delete_queues(
            conf, [bare_topic, "%s.%s" % (bare_topic, host), "%s.%s" % (compute_api.TOPIC, host)]
        )

    return times


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # NOTE: py-amqp warns when the broker cancels a consumer whose channel
    # oslo.messaging is closing at shutdown; harmless, and noise here.
    logging.getLogger("amqp").setLevel(logging.ERROR)
    try:
        times = run(args)
    except Exception as exc:  # noqa: BLE001 - one line and status 1 for any failure
        LOG.debug("bench failed", exc_info=True)
        print("rpc-bench: error: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        return 1

    ours_ms = statistics.median(times["ours"])
    bare_ms = statistics.median(times["bare"])
    ratio = ours_ms / bare_ms
    print(
        "bare: median %.3f ms, p90 %.3f ms over %d calls"
        % (bare_ms, _p90(times["bare"]), len(times["bare"]))
    )
    print(
        "ours: median %.3f ms, p90 %.3f ms over %d calls"
        % (ours_ms, _p90(times["ours"]), len(times["ours"]))
    )
    print(
        "ratio ours/bare (medians): %.3f (target <= %.1f: %s)"
        % (ratio, TARGET_RATIO, "met" if ratio <= TARGET_RATIO else "MISSED")
    )
    hanging = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and t.is_alive() and not t.daemon
    ]
    if hanging:
        print("threads still running after shutdown: %s" % ", ".join(hanging))
    print(
        json.dumps(
            {
                "rpc_call_ratio": round(ratio, 3),
                "ours_ms": round(ours_ms, 3),
                "bare_ms": round(bare_ms, 3),
                "ours_p90_ms": round(_p90(times["ours"]), 3),
                "bare_p90_ms": round(_p90(times["bare"]), 3),
                "calls": args.calls,
                "rounds": args.rounds,
                "warmup": args.warmup,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
