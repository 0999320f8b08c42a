"""A private RabbitMQ node for tests that must stop the broker or change its listeners.

The shared broker on 5672 is never touched: the node has its own name,
ports, configuration, Mnesia and log directories under ``workdir``, and runs
in its own process group. :meth:`PrivateRabbit.stop_app` and
:meth:`PrivateRabbit.start_app` stop and start the broker inside the running
Erlang node (``rabbitmqctl -n NODE stop_app``): its listeners close and
every client connection drops, as when a broker is stopped, and it comes
back in seconds instead of a node's boot.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
#: Seconds a private node may take to boot on a loaded 2-core machine.
BOOT_TIMEOUT = 180


class BrokerFailed(RuntimeError):
    """The private node did not start, or did not open its port (the message has its log)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> str | None:
    """Why a private node cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists(RABBITMQ_SERVER):
        return "needs rabbitmq-server"
    return None


class PrivateRabbit:
    """One RabbitMQ node of a test's own, with a plain AMQP listener on ``port``."""

    def __init__(self, workdir: str, extra_config: str = "", ports: dict[str, int] | None = None):
        """
        :param extra_config: more ``rabbitmq.conf`` lines (e.g. a TLS listener).
        :param ports: more ports the caller reserved, kept by name (e.g. ``tls``).
        """
        self.workdir = workdir
        self.port = free_port()
        self.dist_port = free_port()
        self.ports = dict(ports or {})
        self.node = "cdpriv%s@localhost" % uuid.uuid4().hex[:8]
        self.log = os.path.join(workdir, "node.out")
        self.proc: subprocess.Popen | None = None
        self._conf = os.path.join(workdir, "rabbitmq.conf")
        with open(self._conf, "w") as f:
            f.write("listeners.tcp.1 = 127.0.0.1:%d\n%s" % (self.port, extra_config))
        with open(os.path.join(workdir, "enabled_plugins"), "w") as f:
            f.write("[].\n")

    def url(self, vhost: str = "") -> str:
        """The transport URL of the plain listener as guest (allowed from localhost)."""
        return "rabbit://guest:guest@127.0.0.1:%d/%s" % (self.port, vhost)

    def start(self, ready: Callable[[], bool] | None = None) -> None:
        """Boot the node; returns once its AMQP port accepts (or ``ready()``).

        :raises BrokerFailed: it exited or did not open its port in time.
        """
        env = dict(
            self._env(),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=self._conf,
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.workdir, "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=os.path.join(self.workdir, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.workdir, "log"),
            RABBITMQ_PID_FILE=os.path.join(self.workdir, "node.pid"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(self.workdir, "advanced.config"),
            RABBITMQ_LOGS="-",
        )
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [RABBITMQ_SERVER],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait(ready or self.accepts, BOOT_TIMEOUT)

    def accepts(self) -> bool:
        """Whether the AMQP port accepts a TCP connection now."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except OSError:
            return False
        return True

    def stop_app(self) -> None:
        """Stop the broker (listeners closed, connections dropped); the node stays."""
        self._ctl("stop_app")

    def start_app(self) -> None:
        """Start the broker again; returns once its port accepts."""
        self._ctl("start_app")
        self._wait(self.accepts, 60)

    def add_vhost(self, vhost: str) -> None:
        """A vhost where guest may do anything."""
        self._ctl("add_vhost", vhost)
        self._ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        self._ctl("delete_vhost", vhost)

    def _env(self) -> dict[str, str]:
        # NOTE: a home of its own, for the Erlang cookie the node makes and
        # our rabbitmqctl reads: the system's rabbitmqctl switches to the
        # rabbitmq user, whose cookie is the shared broker's.
        return dict(os.environ, HOME=self.workdir)

    def _ctl(self, *args: str) -> None:
        done = subprocess.run(
            [RABBITMQCTL, "-q", "-n", self.node, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise BrokerFailed("rabbitmqctl %s: %s" % (" ".join(args), done.stderr[-1000:]))

    def _wait(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            if ready():
                return
            time.sleep(0.3)
        raise BrokerFailed("the private RabbitMQ node is not ready:\n" + self.tail())

    def tail(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """Stop the node: only its own process group, started above."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, 15)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)

    def remove(self) -> None:
        """Kill the node and remove its directory."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)
