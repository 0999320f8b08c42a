"""Time for every host's tunnel endpoint list to converge after a port appears.

What is measured, in one process, on a RabbitMQ vhost the bench makes for
itself (and deletes at the end, also after a failure):

* agents: ``--hosts`` simulated agents (default 50), each an oslo.messaging
  RPC server on topic ``compute``, server = its host name, with its own
  transport (so its own connection), as threads of this process. Their one
  endpoint, :class:`SimAgent`, stands in for ``PortEndpoint.update_topology``
  and the network plugin: it records the list and the time it arrived. We
  measure the control plane, not netlink.
* ours: a real scheduler store (SQLite in a temporary directory) with every
  host reported with its own ``tunnel_ip``, one vxlan network made by
  ``NetworkManager.create_network``, a port bound on every host but the
  last. Each round adds a port on the last host (even rounds) or removes it
  (odd rounds), as ``attach_interface`` / ``detach_interface`` do, then
  calls the real ``NetworkManager.fan_out([network])`` with a real
  ``ComputeAPI``. The figure runs from just before ``fan_out`` to the
  arrival of the last cast that made every host's list right: all hosts
  with 49 remotes each after an add; after a remove, the 49 hosts that
  still have ports with 48 each (the last host, with no port left, hears
  nothing: unicast l2population, its plugin tore the network down on unplug).
* bare: the same casts (same hosts, same payloads, computed by the bench)
  sent by a plain ``get_rpc_client(...).cast`` on its own transport, with no
  store, no request context and no error mapping; and one bare cast to one
  agent, for the latency of a single message.

Both sides run in every round, the order swapped every two rounds, so that
drift of the broker or of the host affects both. The agents run in the same
process as the scheduler side, on both sides alike.

Run as root (``rabbitmqctl``) with RabbitMQ up::

    .venv/bin/python bench/topology.py [--hosts N] [--rounds N] [--transport-url URL] [--smoke]

The last line of the output is one JSON object: ``converge_ms`` (median),
``converge_p95_ms``, ``hosts``, ``bare_casts_ms``, ``bare_casts_p95_ms``,
``overhead_ratio`` (the medians, ours/bare), ``bare_one_cast_ms``,
``fan_out_return_ms`` (until ``fan_out`` returned), then the split by add and
remove. The exit status is 0 whatever the figures, 1 on an error.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid as uuidlib
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# NOTE: oslo.messaging imports oslo.service, which imports eventlet for its
# optional backend and warns; we use native threads (as the services do).
warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")
# NOTE: the agents' servers pass executor="threading" on purpose, as our
# transport.get_server does.
warnings.filterwarnings("ignore", message=r"Using the 'executor' argument is deprecated")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import oslo_messaging as messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402

from compute_driver import config  # noqa: E402
from compute_driver.rpc import compute_api, transport  # noqa: E402
from compute_driver.scheduler.database import Database  # noqa: E402
from compute_driver.scheduler.networks import NetworkManager, agent_network  # noqa: E402
from compute_driver.scheduler.store import Store  # noqa: E402

LOG = logging.getLogger("topology-bench")

DEFAULT_TRANSPORT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
#: Seconds the hosts may take to converge before the bench counts an error.
CONVERGE_TIMEOUT = 15.0
#: First tunnel endpoint; host i gets this address + i.
FIRST_TUNNEL_IP = ipaddress.IPv4Address("10.200.0.1")
RESOURCES = {"vcpus": 16, "memory_mb": 65536, "disk_gb": 500}


# --- the simulated agents ------------------------------------------------------------


class Board:
    """What the agents were told since the last :meth:`clear`: host -> (arrival, network, list)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: dict[str, tuple[float, str, list[str]]] = {}
        self._count = 0

    def record(self, host: str, network: str, remotes: list[str]) -> None:
        arrived = time.perf_counter()
        with self._cond:
            self._latest[host] = (arrived, network, remotes)
            self._count += 1
            self._cond.notify_all()

    def clear(self) -> int:
        """Forget what arrived; returns how many messages arrived after the last :meth:`wait`."""
        with self._cond:
            count = self._count
            self._latest.clear()
            self._count = 0
            return count

    def wait(self, network: str, expected: dict[str, list[str]], timeout: float) -> float:
        """Block until every host of ``expected`` holds its list; returns the last arrival.

        :raises RuntimeError: not converged within ``timeout`` s, or a host
            not in ``expected`` was told something.
        """

        def right(host: str, want: list[str]) -> bool:
            got = self._latest.get(host)
            return got is not None and got[1] == network and sorted(got[2]) == want

        def done() -> bool:
            return all(right(h, w) for h, w in expected.items())

        with self._cond:
            if not self._cond.wait_for(done, timeout):
                wrong = sorted(h for h, w in expected.items() if not right(h, w))
                raise RuntimeError(
                    "%d of %d hosts without the right endpoint list after %.0f s (e.g. %s: %r)"
                    % (len(wrong), len(expected), timeout, wrong[0], self._latest.get(wrong[0]))
                )
            extra = sorted(set(self._latest) - set(expected))
            if extra:
                raise RuntimeError("hosts without ports were told: %s" % ", ".join(extra))
            if self._count != len(expected):
                raise RuntimeError("%d messages for %d hosts" % (self._count, len(expected)))
            # NOTE: from here on, any message is one too many (see clear()).
            self._count = 0
            return max(self._latest[h][0] for h in expected)


class SimAgent:
    """Stands in for ``PortEndpoint.update_topology`` and the network plugin."""

    target = messaging.Target(version="1.0")

    def __init__(self, host: str, board: Board) -> None:
        self.host = host
        self.board = board

    @messaging.expose
    def update_topology(
        self, ctxt: dict, network: dict[str, Any], remote_endpoints: list[str]
    ) -> None:
        self.board.record(self.host, network["id"], remote_endpoints)


@contextlib.contextmanager
def agents(conf: cfg.ConfigOpts, hosts: list[str], board: Board) -> Iterator[None]:
    """One RPC server per host, each on its own transport, stopped at the end."""
    started: list[tuple[messaging.MessageHandlingServer, messaging.Transport]] = []
    try:
        for host in hosts:
            own = messaging.get_rpc_transport(conf, allowed_remote_exmods=transport.ALLOWED_EXMODS)
            server = messaging.get_rpc_server(
                own,
                messaging.Target(topic=compute_api.TOPIC, server=host),
                [SimAgent(host, board)],
                executor="threading",
                access_policy=messaging.rpc.dispatcher.ExplicitRPCAccessPolicy,
            )
            started.append((server, own))
            server.start()
        yield
    finally:
        # NOTE: in parallel: stopping a server waits for its listener's
        # poll (up to a second) to notice, one server after another would
        # take a minute.
        def stop(pair: tuple[messaging.MessageHandlingServer, messaging.Transport]) -> None:
            server, own = pair
            try:
                server.stop()
                server.wait()
            finally:
                own.cleanup()

        with ThreadPoolExecutor(max(1, len(started))) as pool:
            for future in [pool.submit(stop, pair) for pair in started]:
                exc = future.exception()
                if exc is not None:
                    LOG.warning("Could not stop a simulated agent: %s", exc)


# --- the broker and the configuration ----------------------------------------------


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )


@contextlib.contextmanager
def private_vhost(base_url: str, vhost: str) -> Iterator[str]:
    """A new vhost on the local broker for this run; yields ``base_url`` pointing at it.

    NOTE: queue names are per vhost: on a shared one our ``compute.<host>``
    queues could meet another run's messages.
    """
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("rabbit", "amqp") or not parts.hostname:
        raise ValueError("%s is not a rabbit:// URL with a host" % base_url)
    try:
        _rabbitmqctl("add_vhost", vhost)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError("rabbitmqctl add_vhost %s: %s" % (vhost, exc.stderr.strip())) from exc
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
        path = "/" + urllib.parse.quote(vhost, safe="")
        yield urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    finally:
        try:
            _rabbitmqctl("delete_vhost", vhost)
        except (subprocess.SubprocessError, OSError) as exc:
            print("topology-bench: could not delete vhost %s: %s" % (vhost, exc), file=sys.stderr)


def _load_conf(transport_url: str, host: str, directory: str) -> cfg.ConfigOpts:
    """The global CONF, loaded the way services load it, from a file in ``directory``."""
    path = os.path.join(directory, "bench.conf")
    with open(path, "w") as f:
        f.write("[DEFAULT]\ntransport_url = %s\nhost = %s\n" % (transport_url, host))
    return config.load(["--config-file", path], "topology-bench", default_config_files=[])


# --- the cloud ---------------------------------------------------------------------------


class Cloud:
    """The scheduler side: store, network manager, the network and its ports."""

    def __init__(self, conf: cfg.ConfigOpts, store: Store, hosts: list[str]) -> None:
        self.hosts = hosts
        self.tunnel_ip = {h: str(FIRST_TUNNEL_IP + i) for i, h in enumerate(hosts)}
        self.manager = NetworkManager(conf, store, compute_api.ComputeAPI(conf))
        for host in hosts:
            store.report_host(host, RESOURCES, {"tunnel_ip": self.tunnel_ip[host]})
        self.network = self.manager.create_network(
            {"project": "bench"},
            uuid=str(uuidlib.uuid4()),
            name="topology-bench",
            type="vxlan",
            cidr="10.99.0.0/16",
            project="bench",
        )
        self.agent_network = agent_network(self.network)
        for host in hosts[:-1]:
            instance = str(uuidlib.uuid4())
            self.manager.networks.allocate_next_port(instance, self.network["uuid"], host)
        self.last_instance = str(uuidlib.uuid4())
        self.last_port: str | None = None

    def add_last_port(self) -> None:
        port = self.manager.networks.allocate_next_port(
            self.last_instance, self.network["uuid"], self.hosts[-1]
        )
        self.last_port = port["uuid"]

    def remove_last_port(self) -> None:
        assert self.last_port is not None
        self.manager.networks.delete_port(self.last_port)
        self.last_port = None

    def expected(self) -> dict[str, list[str]]:
        """What every host with a port must hold now, computed without our code."""
        with_ports = self.hosts if self.last_port else self.hosts[:-1]
        ips = {h: self.tunnel_ip[h] for h in with_ports}
        return {h: sorted(ip for o, ip in ips.items() if o != h) for h in with_ports}


def _converge(
    board: Board, network: str, expected: dict[str, list[str]], send: Callable[[], None]
) -> tuple[float, float]:
    """(ms until converged, ms until ``send`` returned), from just before ``send``."""
    stray = board.clear()
    if stray:
        raise RuntimeError("%d message(s) arrived between measurements" % stray)
    start = time.perf_counter()
    send()
    returned = time.perf_counter()
    last = board.wait(network, expected, CONVERGE_TIMEOUT)
    return (last - start) * 1000.0, (returned - start) * 1000.0


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    tag = uuidlib.uuid4().hex[:8]
    hosts = ["topo-%s-h%03d" % (tag, i) for i in range(args.hosts)]
    board = Board()
    bare_transport: messaging.Transport | None = None
    store: Store | None = None
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="topology-bench-"))
        url = stack.enter_context(private_vhost(args.transport_url, "bench-topology-" + tag))
        conf = _load_conf(url, "topology-bench-" + tag, tmp)
        # NOTE: oslo.messaging registers transport_url when the first
        # transport is made; check_broker reads it.
        transport.get_transport(conf)
        transport.check_broker(conf, retries=1)
        try:
            store = Store(Database("sqlite:///%s" % os.path.join(tmp, "scheduler.sqlite")))
            store.db.upgrade()
            cloud = Cloud(conf, store, hosts)
            network = cloud.network["uuid"]
            started = time.perf_counter()
            stack.enter_context(agents(conf, hosts, board))
            say("%d agents listening in %.1f s" % (len(hosts), time.perf_counter() - started))

            bare_transport = messaging.get_rpc_transport(conf)
            bare_client = messaging.get_rpc_client(
                bare_transport, messaging.Target(topic=compute_api.TOPIC, version="1.0")
            )

            def bare_cast(host: str, remotes: list[str]) -> None:
                bare_client.prepare(server=host).cast(
                    {}, "update_topology", network=cloud.agent_network, remote_endpoints=remotes
                )

            def bare(expected: dict[str, list[str]]) -> None:
                for host, remotes in expected.items():
                    bare_cast(host, remotes)

            def ours() -> None:
                cloud.manager.fan_out([network])

            times: dict[str, list[float]] = {
                "ours_add": [],
                "ours_remove": [],
                "bare_add": [],
                "bare_remove": [],
                "return": [],
                "one": [],
            }
            for rnd in range(-args.warmup, args.rounds):
                adding = rnd % 2 == 0
                if adding:
                    cloud.add_last_port()
                else:
                    cloud.remove_last_port()
                expected = cloud.expected()
                kind = "add" if adding else "remove"
                order = ("ours", "bare") if (rnd // 2) % 2 == 0 else ("bare", "ours")
                got: dict[str, float] = {}
                for side in order:
                    if side == "ours":
                        got["ours"], got["return"] = _converge(board, network, expected, ours)
                    else:
                        got["bare"], _ = _converge(
                            board, network, expected, functools.partial(bare, expected)
                        )
                one_host = hosts[(rnd + args.warmup) % len(expected)]
                one_list = expected[one_host]
                got["one"], _ = _converge(
                    board,
                    network,
                    {one_host: one_list},
                    functools.partial(bare_cast, one_host, one_list),
                )
                if rnd < 0:
                    continue  # warm-up
                times["ours_" + kind].append(got["ours"])
                times["bare_" + kind].append(got["bare"])
                times["return"].append(got["return"])
                times["one"].append(got["one"])
                say(
                    "round %2d %-6s (%d hosts told, %s first): ours %.1f ms (fan_out returned "
                    "after %.1f), bare %.1f ms, one bare cast %.2f ms"
                    % (
                        rnd + 1,
                        kind,
                        len(expected),
                        order[0],
                        got["ours"],
                        got["return"],
                        got["bare"],
                        got["one"],
                    )
                )
            stray = board.clear()
            if stray:
                raise RuntimeError("%d message(s) arrived after the last measurement" % stray)
        finally:
            if bare_transport is not None:
                bare_transport.cleanup()
            transport.cleanup()
            if store is not None:
                store.db.engine.dispose()
    return times


def _p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(1, -(-95 * len(ordered) // 100)) - 1]


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="topology-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50, help="simulated agents (default 50)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=20,
        help="timed rounds, alternately adding and removing the last host's port (default 20)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument(
        "--transport-url",
        default=DEFAULT_TRANSPORT_URL,
        help="the broker, as an oslo.messaging URL; its vhost is replaced (default %(default)s)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a test run of a few seconds (options given explicitly still win): "
        "--hosts 3 --rounds 2 --warmup 0",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(hosts=3, rounds=2, warmup=0)
        args = parser.parse_args(argv)
    if args.hosts < 3 or args.rounds < 2 or args.warmup < 0 or args.warmup % 2:
        parser.error("need hosts >= 3, rounds >= 2 and an even warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # NOTE: py-amqp warns when the broker answers a consumer cancel on a
    # channel oslo.messaging is closing at shutdown; harmless, and noise here.
    logging.getLogger("amqp").setLevel(logging.ERROR)

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        times = run(args, say)
    except Exception as exc:  # noqa: BLE001 - one line and status 1 for any failure
        LOG.debug("bench failed", exc_info=True)
        print("topology-bench: error: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        return 1

    ours = times["ours_add"] + times["ours_remove"]
    bare = times["bare_add"] + times["bare_remove"]
    converge_ms = statistics.median(ours)
    bare_ms = statistics.median(bare)
    say(
        "ours: median %.1f ms, p95 %.1f ms; bare: median %.1f ms, p95 %.1f ms; ratio %.2f"
        % (converge_ms, _p95(ours), bare_ms, _p95(bare), converge_ms / bare_ms)
    )
    hanging = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and t.is_alive() and not t.daemon
    ]
    if hanging:
        say("threads still running after shutdown: %s" % ", ".join(hanging))

    def ms(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    say(
        json.dumps(
            {
                "converge_ms": ms(ours),
                "converge_p95_ms": round(_p95(ours), 2),
                "hosts": args.hosts,
                "bare_casts_ms": ms(bare),
                "bare_casts_p95_ms": round(_p95(bare), 2),
                "overhead_ratio": round(converge_ms / bare_ms, 3),
                "bare_one_cast_ms": ms(times["one"]),
                "fan_out_return_ms": ms(times["return"]),
                "converge_add_ms": ms(times["ours_add"]),
                "converge_remove_ms": ms(times["ours_remove"]),
                "bare_add_ms": ms(times["bare_add"]),
                "bare_remove_ms": ms(times["bare_remove"]),
                "rounds": args.rounds,
                "agents": "threads, one transport each",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
