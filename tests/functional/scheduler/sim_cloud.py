"""Many simulated compute hosts against real schedulers, over the real RabbitMQ.

Each simulated host is a ``compute-agent`` **process** whose libvirt URI is
``test:///default``. NOTE: processes, not threads of one process, for two
reasons found in the code:

* libvirt's test driver keeps ``test:///default`` as one hypervisor per
  process, shared by every connection the process opens: N agents as
  threads would all see (and report, and receive events for) the same
  domains.
* an agent reads ``[DEFAULT] host`` and every other option from the global
  ``cfg.CONF`` (oslo.messaging registers some options only there, see
  ``compute_driver/conf/__init__.py``), so one process holds one agent.

Schedulers are ``compute-scheduler`` processes too (they can be killed and
restarted). The test drives them with :class:`compute_driver.client.Client`
in its own process: one RPC per request, where a ``computectl`` run per
request would cost a Python start-up each.

Each cloud has its own vhost, state directory and configuration files,
and is removed whole at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from compute_driver import config, exception
from compute_driver.client import Client
from compute_driver.rpc import transport

BIN = os.path.dirname(sys.executable)
TRANSPORT_URL = os.environ.get("CD_TEST_TRANSPORT_URL", "rabbit://guest:guest@127.0.0.1:5672/")
TEST_URI = "test:///default"
#: test:///default reports 16 CPUs and 3072 MiB. With this ratio a host takes
#: 16 * 1.25 / 2 = 10 servers of the flavor below: vCPUs are what fill it.
CPU_RATIO = 1.25
FLAVOR: dict[str, Any] = {"name": "sim.2c", "vcpus": 2, "memory_mb": 16, "root_gb": 0}
SERVERS_PER_HOST = 10
IMAGE_BYTES = 1024 * 1024
#: What a scheduler logs once it consumes its queue (compute_driver/scheduler/service.py).
SCHEDULER_READY = "compute-scheduler listening on topic"
#: vm_states a server stays in until someone acts (as compute_driver.client has it).
SETTLED = ("active", "error")

CONFIG = """\
[DEFAULT]
host = {host}
state_path = {state}
transport_url = {transport_url}
debug = {debug}
default_log_levels = amqp=WARN,kombu=WARN,oslo.messaging=WARN,sqlalchemy=WARN,stevedore=WARN

[database]
connection = {database}

[image]
store_path = {images}
import_path = {imports}

[libvirt]
uri = {uri}

[agent]
network_plugins = noop
report_interval = {report_interval}
max_concurrent_builds = {builds}
unknown_domain_policy = log

[scheduler]
service_down_time = {down_time}
periodic_interval = 1
cpu_allocation_ratio = {cpu_ratio}
ram_allocation_ratio = 1.0
reserved_host_memory_mb = 0
rpc_workers = {scheduler_workers}
"""


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass
class SimCloud:
    """Schedulers and simulated hosts as processes, and a client in this process."""

    base: str
    transport_url: str
    database: str
    report_interval: int = 1
    down_time: int = 5
    builds: int = 4
    scheduler_workers: int = 16
    debug: bool = False
    cpu_ratio: float = CPU_RATIO
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _client: Client | None = None

    # --- configuration -------------------------------------------------------

    def config_file(self, name: str) -> str:
        """Write (once) and return the configuration of service or client ``name``."""
        path = os.path.join(self.base, "conf", name + ".conf")
        if not os.path.exists(path):
            state = os.path.join(self.base, "state", name)
            os.makedirs(state, mode=0o755, exist_ok=True)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(
                    CONFIG.format(
                        host=name,
                        state=state,
                        transport_url=self.transport_url,
                        debug=str(self.debug).lower(),
                        database=self.database,
                        # NOTE: one image store for all: the agents read images
                        # at the paths the scheduler recorded.
                        images=os.path.join(self.base, "images"),
                        imports=os.path.join(self.base, "import"),
                        uri=TEST_URI,
                        report_interval=self.report_interval,
                        builds=self.builds,
                        down_time=self.down_time,
                        cpu_ratio=self.cpu_ratio,
                        scheduler_workers=self.scheduler_workers,
                    )
                )
        return path

    def log_path(self, name: str) -> str:
        return os.path.join(self.base, "log", name + ".log")

    # --- processes -------------------------------------------------------------

    def start(self, program: str, name: str) -> None:
        """Start ``compute-scheduler`` or ``compute-agent`` as service ``name``."""
        os.makedirs(os.path.dirname(self.log_path(name)), exist_ok=True)
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - kept open by the child
        self.procs[name] = subprocess.Popen(
            [os.path.join(BIN, program), "--config-file", self.config_file(name)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def start_scheduler(self, name: str = "sched-0", wait: bool = True) -> None:
        """Start a scheduler; with ``wait``, return once it consumes its queue."""
        self.start("compute-scheduler", name)
        if wait:
            self.wait_for_log(name, SCHEDULER_READY)

    def start_agents(self, count: int, prefix: str = "sim") -> list[str]:
        names = ["%s-%03d" % (prefix, i) for i in range(count)]
        for name in names:
            self.start("compute-agent", name)
        return names

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Signal service ``name`` and wait for it (killed after 20 s)."""
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def stop_all(self) -> None:
        """SIGTERM to every service at once, then wait for each (killed after 20 s)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in list(self.procs):
            self.stop(name)

    def check_alive(self) -> None:
        """:raises AssertionError: a service exited (with the end of its log)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(
                    "%s exited with %s:\n%s" % (name, proc.returncode, self.tail(name))
                )

    def wait_for_log(self, name: str, text: str, timeout: float = 60) -> None:
        """Wait until the log of service ``name`` shows ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with open(self.log_path(name), errors="replace") as f:
                    if text in f.read():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("%r not in the log of %s:\n%s" % (text, name, self.tail(name)))

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            with open(self.log_path(name), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- the client ----------------------------------------------------------------

    @property
    def client(self) -> Client:
        """A client in this process (loads the global CONF from the client's config)."""
        if self._client is None:
            config.load(
                ["--config-file", self.config_file("client")],
                "ft-scheduler",
                default_config_files=[],
            )
            # NOTE: a short timeout: a call sent before a scheduler declared
            # its queue, or taken by one that was killed, is never answered.
            self._client = Client(timeout=10, admin=True)
        return self._client

    def call(self, func: Callable[[], Any], timeout: float = 90) -> Any:
        """``func()``, retried while no scheduler answers (starting or restarting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return func()
            except (exception.MessagingTimeout, exception.MessagingError):
                if time.monotonic() > deadline:
                    raise
                self.check_alive()
                time.sleep(0.2)

    def wait_for_hosts(self, names: list[str], timeout: float = 120) -> list[dict[str, Any]]:
        """Wait until every host in ``names`` is up and enabled; returns their records."""
        deadline = time.monotonic() + timeout
        up: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            self.check_alive()
            hosts = self.call(self.client.list_hosts)
            up = [h for h in hosts if h["name"] in names and h["state"] == "up" and h["enabled"]]
            if len(up) == len(names):
                return up
            time.sleep(0.5)
        missing = sorted(set(names) - {h["name"] for h in up})
        raise AssertionError(
            "hosts %s not up within %d s; log of %s:\n%s"
            % (missing, timeout, missing[0], self.tail(missing[0]))
        )

    def prepare_catalog(self) -> tuple[str, str]:
        """The flavor :data:`FLAVOR` and a 1 MiB raw image; returns (flavor, image uuid)."""
        os.makedirs(os.path.join(self.base, "import"), exist_ok=True)
        path = os.path.join(self.base, "import", "disk.raw")
        with open(path, "wb") as f:
            f.truncate(IMAGE_BYTES)
        self.call(lambda: self.client.create_flavor(**FLAVOR))
        # NOTE: named relative to [image] import_path.
        image = self.call(lambda: self.client.import_image("sim-image", "disk.raw"))
        return FLAVOR["name"], image["uuid"]

    def servers(self, project: str) -> dict[str, dict[str, Any]]:
        return {s["uuid"]: s for s in self.call(lambda: self.client.list_servers(project=project))}

    def wait_settled(
        self, project: str, uuids: set[str], timeout: float = 120
    ) -> dict[str, dict[str, Any]]:
        """Wait until each server of ``uuids`` that exists is ACTIVE or ERROR with no task."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.servers(project)
            waiting = {
                u: r
                for u, r in records.items()
                if u in uuids and (r["vm_state"] not in SETTLED or r["task_state"])
            }
            if not waiting:
                return {u: r for u, r in records.items() if u in uuids}
            if time.monotonic() > deadline:
                states: dict[str, int] = {}
                for r in waiting.values():
                    key = "%s/%s" % (r["vm_state"], r["task_state"])
                    states[key] = states.get(key, 0) + 1
                raise AssertionError(
                    "%d server(s) not settled after %d s: %s; e.g. %s"
                    % (len(waiting), timeout, states, next(iter(waiting.values())))
                )
            time.sleep(0.5)

    def delete_all(self, project: str, timeout: float = 120) -> None:
        """Delete every server of ``project`` and wait until none is left."""
        records = self.servers(project)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda u: self.call(lambda: self.client.delete_server(u)), records))
        deadline = time.monotonic() + timeout
        while True:
            left = self.servers(project)
            if not left:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    "%d server(s) not deleted after %d s: e.g. %s"
                    % (len(left), timeout, next(iter(left.values())))
                )
            time.sleep(0.5)


def create_many(
    cloud: SimCloud,
    count: int,
    flavor: str,
    image: str,
    project: str,
    threads: int,
    on_answer: Callable[[int], None] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Exception]]:
    """Create ``count`` servers from ``threads`` threads, each retried by UUID while
    no scheduler answers (as an API service would).

    :param on_answer: called with the number of answers so far, after each.
    :returns: (records by uuid, errors by uuid) of the creates.
    """
    uuids = [str(uuidlib.uuid4()) for _ in range(count)]
    records: dict[str, dict[str, Any]] = {}
    errors: dict[str, Exception] = {}

    def create(uuid: str) -> None:
        try:
            records[uuid] = cloud.call(
                lambda: cloud.client.create_server(
                    "sim-" + uuid[:8], flavor, image, project=project, uuid=uuid
                ),
                timeout=180,
            )
        except exception.ComputeDriverError as exc:
            errors[uuid] = exc
        if on_answer is not None:
            on_answer(len(records) + len(errors))

    with ThreadPoolExecutor(threads, thread_name_prefix="create") as pool:
        list(pool.map(create, uuids))
    return records, errors


def host_usage(hosts: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """(vcpus, memory_mb, disk_gb) claimed, by host name."""
    return {h["name"]: (h["vcpus_used"], h["memory_mb_used"], h["disk_gb_used"]) for h in hosts}


@contextlib.contextmanager
def sim_cloud(
    database: str | None = None, broker: Any = None, **options: Any
) -> Iterator[SimCloud]:
    """A :class:`SimCloud` on a vhost of its own; all of it removed at the end.

    :param database: the schedulers' SQLAlchemy URL (default: SQLite in the cloud's directory).
    :param broker: a ``private_rabbit.PrivateRabbit`` to use instead of the shared broker.
    """
    if os.geteuid() != 0:
        raise AssertionError("these tests run as root (rabbitmqctl makes their vhost)")
    # NOTE: 0755 like the other functional tests' state: nothing here runs
    # QEMU, but the dir backend and image store expect traversable paths.
    base = tempfile.mkdtemp(prefix="ft-sched-", dir="/var/tmp")
    os.chmod(base, 0o755)
    tag = os.path.basename(base).rsplit("-", 1)[-1].lower()
    vhost = "cdft-sched-" + tag
    if broker is not None:
        broker.add_vhost(vhost)
    else:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    cloud = SimCloud(
        base=base,
        transport_url=(broker.url() if broker is not None else TRANSPORT_URL).rstrip("/")
        + "/"
        + vhost,
        database=database or "sqlite:///%s/scheduler.sqlite" % base,
        **options,
    )
    try:
        yield cloud
    finally:
        cloud.stop_all()
        transport.cleanup()
        if broker is not None:
            broker.delete_vhost(vhost)
        else:
            subprocess.run(
                ["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60
            )
        if os.environ.get("CD_TEST_KEEP_STATE"):
            print("kept %s" % base)
        else:
            shutil.rmtree(base, ignore_errors=True)
