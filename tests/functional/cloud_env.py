"""What the functional tests share: our two services on the real daemons, and helpers.

Every test session gets its own RabbitMQ vhost, host name and state
directory, so it never sees another run's messages or files; all of it is
removed at the end, domains included.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import libvirt
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
STATE_ROOT = "/var/lib/compute-driver"
GUEST_DIR = os.environ.get("CD_TEST_GUEST_DIR", os.path.join(STATE_ROOT, "test-guest"))
TRANSPORT_URL = os.environ.get("CD_TEST_TRANSPORT_URL", "rabbit://guest:guest@127.0.0.1:5672/")
LIBVIRT_URI = "qemu:///system"

CONFIG = (
    """\
[DEFAULT]
host = {host}
state_path = {state}
transport_url = {transport_url}
control_exchange = {exchange}
debug = true

[database]
connection = sqlite:///{state}/scheduler.sqlite

[agent]
report_interval = 1
network_plugins = linux_bridge

[linux_bridge]
# NOTE: VXLAN over loopback: every guest of this one-host cloud shares the
# host's bridges, which is what the network tests need; no packet leaves.
local_ip = 127.0.0.1

[scheduler]
service_down_time = 5
periodic_interval = 1

[libvirt]
uri = {uri}
stopped_event_delay = 1

[image]
# NOTE: the test guest's files are imported by names relative to this.
import_path = %s
"""
    % GUEST_DIR
)


def require_services() -> None:
    if os.geteuid() != 0:
        pytest.fail("functional tests run as root (they drive qemu:///system); use `make test`")
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError:
        pytest.fail("RabbitMQ is not listening on 127.0.0.1:5672; run tools/start-services.sh")
    try:
        libvirt.open(LIBVIRT_URI).close()
    except libvirt.libvirtError as exc:
        pytest.fail(
            "libvirtd does not answer on %s (%s); run tools/start-services.sh" % (LIBVIRT_URI, exc)
        )


@dataclass
class Result:
    """What one computectl run did."""

    rc: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Cloud:
    """A scheduler and an agent on this machine, and the means to drive them."""

    state: str
    host: str
    #: The client's configuration (computectl's; the base of the services').
    config_file: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    #: Per service, a second file read after ``config_file``: its own
    #: broker credential (``transport_url``) and report secret or key.
    service_configs: dict[str, str] = field(default_factory=dict)
    #: The session's broker users (None: the cloud runs as guest).
    roles: BusRoles | None = None

    def config_args(self, service: str | None = None) -> list[str]:
        """``--config-file`` arguments of ``service`` (None: the client's)."""
        args = ["--config-file", self.config_file]
        if service in self.service_configs:
            args += ["--config-file", self.service_configs[service]]
        return args

    def log_path(self, service: str) -> str:
        return os.path.join(self.state, service + ".log")

    def start(self, service: str) -> None:
        """Start compute-scheduler or compute-agent in the background."""
        log = open(self.log_path(service), "ab")  # noqa: SIM115 - kept open by the child
        self.procs[service] = subprocess.Popen(
            [os.path.join(BIN, service), *self.config_args(service)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, service: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(service, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def ctl(self, *args: str, timeout: float = 300) -> Result:
        """Run ``computectl -f json ARGS`` against this cloud."""
        done = subprocess.run(
            [
                os.path.join(BIN, "computectl"),
                "--config-file",
                self.config_file,
                "-f",
                "json",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, timeout: float = 300) -> Any:
        """Run computectl, require exit 0, return its JSON (or None)."""
        result = self.ctl(*args, timeout=timeout)
        assert result.rc == 0, "computectl %s failed (%d): %s" % (
            " ".join(args),
            result.rc,
            result.stderr,
        )
        return result.json() if result.stdout.strip() else None

    def create_server(
        self, name: str, image: str, *extra: str, user_data: bytes | None = None
    ) -> dict[str, Any]:
        """``server create NAME --flavor m1.tiny --image IMAGE --project ft --wait EXTRA``."""
        args = [
            "server",
            "create",
            name,
            "--flavor",
            "m1.tiny",
            "--image",
            image,
            "--project",
            "ft",
            "--wait",
            *extra,
        ]
        if user_data is None:
            return self.ok(*args)
        with tempfile.NamedTemporaryFile("wb", suffix=".sh") as f:
            f.write(user_data)
            f.flush()
            return self.ok(*args, "--user-data", f.name)

    def wait_for_host(self, state: str = "up", timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        result = None
        while time.monotonic() < deadline:
            # NOTE: a short timeout: a call sent before the scheduler has
            # declared its queue is dropped by the broker, not delayed.
            result = self.ctl("--timeout", "5", "host", "list")
            if result.rc == 0:
                for host in result.json():
                    if host["name"] == self.host and host["state"] == state:
                        return host
            time.sleep(0.5)
        raise AssertionError(
            "host %s not %s within %d s; last answer %s; agent log:\n%s"
            % (self.host, state, timeout, result, self.tail("compute-agent"))
        )

    def tail(self, service: str, lines: int = 40) -> str:
        try:
            with open(self.log_path(service), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def add_vhost(vhost: str) -> None:
    """A RabbitMQ vhost for one test session, open to the guest user."""
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")


def delete_vhost(vhost: str) -> None:
    """Remove a session's vhost, and with it every queue and exchange it made."""
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


#: The script that makes the broker users of the three roles.
RABBITMQ_USERS = os.path.join(REPO, "tools", "rabbitmq-users.sh")


def role_url(user: str, password: str, vhost: str, base: str = TRANSPORT_URL) -> str:
    """``base`` (a rabbit:// URL) with ``user:password`` and ``vhost``."""
    parts = urllib.parse.urlsplit(base)
    netloc = "%s:%s@%s" % (
        urllib.parse.quote(user, safe=""),
        urllib.parse.quote(password, safe=""),
        parts.netloc.rpartition("@")[2],
    )
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, "/" + urllib.parse.quote(vhost, safe=""), parts.query, "")
    )


@dataclass
class BusRoles:
    """The broker users of one test session, each with its transport URL."""

    vhost: str
    #: "client", "scheduler", "notifications", and "agent-<host>" for each agent.
    urls: dict[str, str] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)
    #: The scheduler's ``[agent_reports] secret``.
    report_secret: str = field(default_factory=lambda: secrets.token_hex(32))

    def add(self, role: str, *args: str, user: str) -> str:
        """Create ``user`` with ``role``'s permissions (tools/rabbitmq-users.sh); its URL."""
        password = secrets.token_urlsafe(24)
        subprocess.run(
            ["bash", RABBITMQ_USERS, "-p", self.vhost, role, *args, user],
            input=password + "\n",
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.users.append(user)
        return role_url(user, password, self.vhost)

    def add_agent(self, host: str) -> str:
        """The broker user ``agent-<host>``; its URL (also in ``urls``)."""
        name = "agent-" + host
        self.urls[name] = self.add("agent", host, user=name)
        return self.urls[name]

    def agent_key(self, host: str) -> str:
        """``host``'s ``[agent_reports] key``."""
        from compute_driver.rpc import report_signing

        return report_signing.host_key(self.report_secret, host)

    def client_key(self) -> str:
        """The clients' ``[client] key`` (computectl's, an upstream API's)."""
        from compute_driver.rpc import report_signing

        return report_signing.client_key(self.report_secret)

    def delete(self) -> None:
        for user in self.users:
            subprocess.run(
                ["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60
            )


def add_role_users(vhost: str, tag: str, host: str) -> BusRoles:
    """Users for a client, a scheduler and the agent of ``host`` in ``vhost``.

    User names are global in RabbitMQ, so they carry the session's ``tag``.
    """
    roles = BusRoles(vhost)
    roles.urls["client"] = roles.add("client", user="cdft-%s-client" % tag)
    roles.urls["scheduler"] = roles.add("scheduler", user="cdft-%s-scheduler" % tag)
    roles.urls["notifications"] = roles.add("notifications", user="cdft-%s-notify" % tag)
    roles.add_agent(host)
    return roles


def write_service_configs(state: str, roles: BusRoles, host: str) -> dict[str, str]:
    """The scheduler's and the agent's own configuration files (0600: passwords)."""
    texts = {
        "compute-scheduler": "[DEFAULT]\ntransport_url = %s\n\n[agent_reports]\nsecret = %s\n"
        % (roles.urls["scheduler"], roles.report_secret),
        "compute-agent": "[DEFAULT]\ntransport_url = %s\n\n[agent_reports]\nkey = %s\n"
        % (roles.urls["agent-" + host], roles.agent_key(host)),
        # NOTE: not a service: a consumer of the notifications (monitoring).
        "notifications": "[DEFAULT]\ntransport_url = %s\n" % roles.urls["notifications"],
    }
    paths = {}
    for service, text in texts.items():
        paths[service] = os.path.join(state, service + ".conf")
        fd = os.open(paths[service], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return paths


def remove_domains_of(state: str) -> None:
    """Destroy and undefine domains whose files live under ``state`` (debris of failed tests)."""
    conn = libvirt.open(LIBVIRT_URI)
    try:
        for dom in conn.listAllDomains():
            if state in dom.XMLDesc():
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    finally:
        conn.close()


def fast_console(cmdline: str) -> str:
    """``cmdline`` with its serial console at 115200 baud when it names no speed.

    NOTE: a bare ``console=ttyS0`` runs the port at 9600 baud, and QEMU's
    UART keeps to the programmed speed: the ~22 KB the test guest's kernel
    prints took ~20 s of each ~40 s boot under TCG (``Run /init`` at 10.6 s
    against 3.8 s at 115200). Every line is still printed.
    """
    return " ".join(
        arg + ",115200" if arg.startswith("console=ttyS") and "," not in arg else arg
        for arg in cmdline.split()
    )


def ensure_test_guest() -> dict[str, str]:
    """Build the test guest if needed; its manifest, with :func:`fast_console`'s cmdline."""
    manifest = os.path.join(GUEST_DIR, "guest.json")
    # NOTE: always run: the script does nothing when the build is current,
    # and rebuilds a guest of an older build (e.g. one without qemu-ga).
    subprocess.run(
        ["bash", os.path.join(REPO, "tools", "build-test-guest.sh"), GUEST_DIR],
        check=True,
        capture_output=True,
    )
    with open(manifest) as f:
        loaded: dict[str, str] = json.load(f)
    loaded["cmdline"] = fast_console(loaded["cmdline"])
    return loaded


#: User data for the test guest: pings ``target`` once a second until a
#: reply (then prints "ok after N failures"), at most ``tries`` times (then
#: prints "failed"), on the serial console. See :func:`pinger_user_data`.
PINGER = """#!/bin/sh
(
i=0
while [ $i -lt %(tries)d ]; do
    if ping -c 1 -W 1 %(target)s >/dev/null 2>&1; then
        echo "CD-GUEST ping %(target)s ok after $i failures"
        exit 0
    fi
    i=$((i + 1))
    sleep 1
done
echo "CD-GUEST ping %(target)s failed"
) </dev/null >/dev/console 2>&1 &
"""


def pinger_user_data(target: str, tries: int) -> bytes:
    """User data that makes the test guest report ``CD-GUEST ping TARGET ok|failed``."""
    return (PINGER % {"target": target, "tries": tries}).encode()


def guest_import_args(name: str = "test-guest", *extra: str) -> list[str]:
    """``computectl`` arguments that import the test guest (built if needed) as ``name``."""
    manifest = ensure_test_guest()
    # NOTE: names relative to [image] import_path (GUEST_DIR in CONFIG).
    return [
        "image",
        "import",
        name,
        manifest["disk"],
        "--kernel",
        manifest["kernel"],
        "--initrd",
        manifest["initrd"],
        "--cmdline",
        manifest["cmdline"],
        *extra,
    ]


def _console_file(cloud: Cloud, server: str) -> str | None:
    """The console log the agent keeps for ``server`` (a UUID) below the cloud's state, if one."""
    pattern = os.path.join(glob.escape(cloud.state), "**", "instances", glob.escape(server))
    found = glob.glob(os.path.join(pattern, "console.log"), recursive=True)
    return found[0] if len(found) == 1 else None


def _file_has(path: str, marker: str) -> bool:
    try:
        with open(path, errors="replace") as f:
            return marker in f.read()
    except OSError:
        return False


#: Seconds between ``console-log`` calls while the console file lacks the marker.
API_POLL_WHILE_FILE_LACKS = 5.0


def wait_for_console(cloud: Cloud, server: str, marker: str, timeout: float = 120) -> str:
    """Poll the server's console log until ``marker`` appears; return the log (as the API shows it).

    The API (``server console-log``, a ``computectl`` process per call) has
    the last word. NOTE: while the agent's console file for the server
    lacks the marker, it is read instead (every 0.25 s) and the API only
    asked every :data:`API_POLL_WHILE_FILE_LACKS` s: a computectl call costs
    the booting TCG guests ~0.6 s of CPU, and the marker is seen sooner.
    """
    deadline = time.monotonic() + timeout
    text = ""
    path: str | None = None
    last_call = -float("inf")
    while time.monotonic() < deadline:
        path = path or _console_file(cloud, server)
        now = time.monotonic()
        if path and not _file_has(path, marker) and now - last_call < API_POLL_WHILE_FILE_LACKS:
            time.sleep(0.25)
            continue
        last_call = now
        result = cloud.ctl("server", "console-log", server, "--lines", "2000")
        if result.rc == 0:
            text = result.json()
            if marker in text:
                return text
        time.sleep(1)
    raise AssertionError(
        "%r not in the console of %s within %d s:\n%s" % (marker, server, timeout, text[-3000:])
    )
