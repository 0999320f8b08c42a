"""A cloud of two simulated hosts: our scheduler and two agents, each agent with a host of its own.

Helpers of ``test_two_host_guests.py`` (the fixture is in conftest.py).
Layout::

    scheduler, agent A, agent B: processes here, talking over a RabbitMQ vhost of their own
    host A = netns cdtA<sfx>, ul0 10.250.0.1 ==veth== ul0 10.250.0.2, netns cdtB<sfx> = host B
    a private libvirtd runs INSIDE each namespace: its QEMU guests' taps, like
    the plugin's bridges and VXLAN devices, are that host's alone.

Each agent drives its own libvirtd (``qemu+unix:///system?socket=...``) and
its network plugin works in its host's namespace with that host's underlay
address as ``local_ip``: ``linux_bridge`` (``[linux_bridge] netns``, hosts of
a netns_lab.Lab), or ``ovs`` (hosts of an ovs_lab.OvsLab, each with its own
ovsdb-server and ovs-vswitchd inside the namespace; ``[ovs] netns`` for the
taps, the daemons' sockets by path; that host's libvirtd sees the host's OVS
run directory as /run/openvswitch, as it would on a real host). Everything the
agents and QEMU read or write (instance directories, image cache, the image
store) is under ``/var/lib/compute-driver/<run>``, which no private
libvirtd hides behind a bind mount.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloud_env import (
    BIN,
    GUEST_DIR,
    STATE_ROOT,
    TRANSPORT_URL,
    Cloud,
    add_vhost,
    delete_vhost,
    guest_import_args,
    require_services,
)
from netns_lab import Host, Lab
from ovs_lab import OvsHost, OvsLab

from tests.functional import private_libvirtd

LOG = logging.getLogger(__name__)

SCHEDULER_CONFIG = (
    """\
[DEFAULT]
host = {host}
state_path = {state}
transport_url = {transport_url}
control_exchange = compute_driver
debug = true

[database]
connection = sqlite:///{scheduler_state}/scheduler.sqlite

[image]
# NOTE: one store for every host (the agents boot from the scheduler's files).
store_path = {scheduler_state}/images
import_path = %s

[scheduler]
# NOTE: generous: two TCG guests booting on a busy machine can delay reports.
service_down_time = 20
periodic_interval = 1
"""
    % GUEST_DIR
)

AGENT_CONFIG = (
    SCHEDULER_CONFIG
    + """
[agent]
report_interval = 1
network_plugins = {plugin}

[libvirt]
uri = {uri}
# NOTE: never kvm here: /dev/kvm exists but its guests hang; this also skips the probe.
virt_type = qemu
stopped_event_delay = 1
"""
)

PLUGIN_CONFIG = {
    "linux_bridge": """
[linux_bridge]
netns = {netns}
local_ip = {local_ip}
""",
    "ovs": """
[ovs]
netns = {netns}
local_ip = {local_ip}
ovsdb_connection = unix:{ovs_dir}/db.sock
run_dir = {ovs_dir}
datapath_type = netdev
""",
}


@dataclass
class SimHost:
    """One simulated compute host: a namespace, the libvirtd inside it, and its agent."""

    net: Host | OvsHost  # the namespace and underlay address (netns_lab, ovs_lab)
    libvirtd: private_libvirtd.PrivateLibvirtd
    agent: Cloud  # the agent's process, state directory and config file

    @property
    def name(self) -> str:
        """The compute host name (``[DEFAULT] host`` of its agent)."""
        return self.agent.host

    @property
    def netns(self) -> str:
        return self.net.netns


class TwoHostCloud:
    """A scheduler and agents on hosts A and B of ``lab``; :meth:`cleanup` removes it all.

    :meth:`cleanup` leaves the namespaces to the lab (the ``lab`` fixture
    removes them after this cloud is gone).
    """

    def __init__(self, lab: Lab | OvsLab, plugin: str = "linux_bridge") -> None:
        """:param lab: a netns_lab.Lab (``linux_bridge``) or an ovs_lab.OvsLab (``ovs``)."""
        self.lab = lab
        self.plugin = plugin
        self.tag = uuid.uuid4().hex[:8]
        self.state = os.path.join(STATE_ROOT, "two-host-" + self.tag)
        self.vhost = "cdth-" + self.tag
        self.transport_url = TRANSPORT_URL.rstrip("/") + "/" + self.vhost
        self.hosts: dict[str, SimHost] = {}
        self.api = Cloud(
            state=self.state,
            host="cdt-sched-" + self.tag,
            config_file=os.path.join(self.state, "scheduler.conf"),
        )
        self._vhost_made = False

    # --- setup -----------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        """Namespaces, libvirtds, vhost, scheduler and both agents; wait until both hosts are up."""
        require_services()
        os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
        # NOTE: 0755 all the way down: QEMU runs as libvirt-qemu and must
        # reach the disks and config drives below these directories.
        os.makedirs(self.state, mode=0o755)
        add_vhost(self.vhost)
        self._vhost_made = True
        with open(self.api.config_file, "w") as f:
            f.write(self._config(SCHEDULER_CONFIG, self.api.host, self.state))
        self.api.start("compute-scheduler")
        for net in self.lab.build_hosts():
            self._start_host(net)
        self._wait_until_up(timeout)

    def _wait_until_up(self, timeout: float) -> None:
        """Wait until the scheduler lists both hosts up; fail at once if a service exits."""
        names = {host.name for host in self.hosts.values()}
        services = [(self.api, "compute-scheduler")] + [
            (host.agent, "compute-agent") for host in self.hosts.values()
        ]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for owner, service in services:
                if owner.procs[service].poll() is not None:
                    raise AssertionError(
                        "%s of %s exited:\n%s" % (service, owner.host, _tail(owner, service, 40))
                    )
            # NOTE: a short timeout: a call sent before the scheduler has
            # declared its queue is dropped by the broker, not delayed.
            listed = self.api.ctl("--timeout", "5", "host", "list")
            if listed.rc == 0 and names <= {h["name"] for h in listed.json() if h["state"] == "up"}:
                return
            time.sleep(0.5)
        raise AssertionError("hosts %s not up within %d s:\n%s" % (names, timeout, self.logs()))

    def _start_host(self, net: Host | OvsHost) -> None:
        ovs_dir = net.state_dir if isinstance(net, OvsHost) else ""
        binds = {ovs_dir: "/run/openvswitch"} if self.plugin == "ovs" else {}
        libvirtd = private_libvirtd.PrivateLibvirtd(netns=net.netns, binds=binds)
        name = "cdt-%s-%s" % (net.name.lower(), self.tag)
        state = os.path.join(self.state, "host-" + net.name.lower())
        os.makedirs(state, mode=0o755)
        agent = Cloud(state=state, host=name, config_file=os.path.join(state, "agent.conf"))
        # NOTE: registered before start: cleanup() must find a daemon that failed halfway.
        self.hosts[net.name] = SimHost(net, libvirtd, agent)
        libvirtd.start()
        with open(agent.config_file, "w") as f:
            f.write(
                self._config(
                    AGENT_CONFIG + PLUGIN_CONFIG[self.plugin],
                    name,
                    state,
                    plugin=self.plugin,
                    netns=net.netns,
                    local_ip=net.underlay_ip,
                    uri=libvirtd.uri,
                    ovs_dir=ovs_dir,
                )
            )
        self._start_agent(agent, net.netns)

    def restart_agent(self, key: str) -> None:
        """Stop host ``key``'s agent (SIGTERM) and start it again with the same config."""
        host = self.hosts[key]
        proc = host.agent.procs.pop("compute-agent")
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        self._start_agent(host.agent, host.netns)

    @staticmethod
    def _start_agent(agent: Cloud, netns: str) -> None:
        """Start ``compute-agent`` with the /sys of ``netns`` (its sockets stay in ours).

        NOTE: the agent checks that libvirt wired each guest NIC in
        /sys/class/net (``compute_driver/virt/libvirt/ports.py``), which on a
        real host shows the host's taps. Here the taps are in the simulated
        host's namespace, so the agent gets a mount namespace whose /sys is
        that namespace's sysfs (a sysfs shows the network namespace of whoever
        mounted it). Its sockets stay in ours: RabbitMQ's guest user may only
        log in over loopback, and the plugin reaches the host's namespace by
        name anyway (``[linux_bridge] netns``).
        """
        script = 'nsenter --net="/run/netns/$1" mount -t sysfs sysfs /sys\nshift\nexec "$@"\n'
        agent.procs["compute-agent"] = private_libvirtd.in_private_mounts(
            script,
            [netns, os.path.join(BIN, "compute-agent"), "--config-file", agent.config_file],
            agent.log_path("compute-agent"),
        )

    def _config(self, template: str, host: str, state: str, **extra: str) -> str:
        return template.format(
            host=host,
            state=state,
            scheduler_state=self.state,
            transport_url=self.transport_url,
            **extra,
        )

    def import_test_guest(self) -> dict[str, Any]:
        """The tiny test guest (built and cached by ``ensure_test_guest``), imported here."""
        return self.api.ok(*guest_import_args())

    # --- driving it ------------------------------------------------------------

    def ok(self, *args: str, timeout: float = 300) -> Any:
        """``computectl -f json ARGS`` against this cloud; exit 0 required; its JSON."""
        return self.api.ok(*args, timeout=timeout)

    def wait_for_active(self, server: str, timeout: float = 180) -> dict[str, Any]:
        """Poll ``server show`` until the server is active with no task; fail at once on error."""
        shown: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.ok("server", "show", server)
            if shown["vm_state"] == "active" and not shown["task_state"]:
                return shown
            assert shown["vm_state"] != "error", "server %s failed: %s\n%s" % (
                server,
                shown["fault"],
                self.logs(),
            )
            time.sleep(1)
        raise AssertionError("server %s not active within %d s: %s" % (server, timeout, shown))

    def logs(self, lines: int = 30) -> str:
        """The last lines of every service's log and of both libvirtds (for failure messages)."""
        parts = ["--- scheduler\n" + _tail(self.api, "compute-scheduler", lines)]
        for key, host in self.hosts.items():
            parts.append("--- agent %s\n%s" % (key, _tail(host.agent, "compute-agent", lines)))
            parts.append("--- libvirtd %s\n%s" % (key, host.libvirtd.log_tail(lines)))
        return "\n".join(parts)

    # --- teardown --------------------------------------------------------------

    def cleanup(self) -> None:
        """Delete the servers, stop the services and libvirtds, drop the vhost and the files.

        Every step runs whatever the earlier ones did.
        """
        if "compute-scheduler" in self.api.procs:
            _quietly(self._delete_servers)
        _quietly(self._stop_services)
        for host in self.hosts.values():
            # Destroys the domains that are left and kills the daemon and its QEMUs by PID.
            _quietly(host.libvirtd.cleanup)
        if self._vhost_made:
            _quietly(delete_vhost, self.vhost)
        if not os.environ.get("CD_TEST_KEEP_STATE"):
            shutil.rmtree(self.state, ignore_errors=True)

    def _stop_services(self, grace: float = 5) -> None:
        """SIGTERM to the agents and the scheduler at once; SIGKILL after ``grace`` seconds.

        NOTE: all at once: each takes seconds to stop, and the guests are
        gone already (a stopped agent never stops guests anyway).
        """
        owners = [self.api, *(host.agent for host in self.hosts.values())]
        procs = [proc for owner in owners for proc in owner.procs.values()]
        for owner in owners:
            owner.procs.clear()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def _delete_servers(self) -> None:
        listed = self.api.ctl("--timeout", "20", "server", "list", timeout=60)
        if listed.rc != 0:
            return
        # NOTE: through the agents, so that their plugins unplug the ports;
        # all at once, then one wait.
        for server in listed.json():
            self.api.ctl("server", "delete", server["uuid"], timeout=60)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            listed = self.api.ctl("--timeout", "20", "server", "list", timeout=60)
            if listed.rc != 0 or not listed.json():
                return
            time.sleep(0.5)
        LOG.warning("servers left after 90 s: %s", listed.stdout)


def _tail(owner: Cloud, service: str, lines: int) -> str:
    """The last ``lines`` lines of a service's log, without pyroute2's and asyncio's chatter."""
    try:
        with open(owner.log_path(service), errors="replace") as f:
            kept = [line for line in f if " pyroute2." not in line and " asyncio " not in line]
    except OSError:
        return "(no log)"
    return "".join(kept[-lines:])


def _quietly(step: Callable[..., Any], *args: Any) -> None:
    try:
        step(*args)
    except Exception:  # noqa: BLE001 - a teardown step must not stop the next ones
        LOG.exception("cleanup step %s failed", getattr(step, "__name__", step))


# --- what a host's namespace holds -----------------------------------------------------


def links(netns: str) -> dict[str, dict[str, Any]]:
    """Interfaces of ``netns`` by name, as ``ip -j -d link show`` gives them."""
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "-d", "link", "show"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return {link["ifname"]: link for link in json.loads(out)}


def flood_destinations(netns: str, dev: str) -> set[str]:
    """Remote VTEPs of the all-zero (flood) FDB entries of VXLAN device ``dev`` in ``netns``."""
    out = subprocess.run(
        ["bridge", "-n", netns, "-j", "fdb", "show", "dev", dev],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return {
        entry["dst"]
        for entry in json.loads(out or "[]")
        if entry.get("mac") == "00:00:00:00:00:00" and "dst" in entry
    }


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError("%s: not within %d s (last: %r)" % (what, timeout, last))
