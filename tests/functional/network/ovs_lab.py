"""Two simulated hosts, each with its own ovsdb-server + ovs-vswitchd, for the ``ovs`` plugin.

Helpers of tests/functional/network/test_ovs_traffic.py. Needs root,
Open vSwitch (openvswitch-switch: ovsdb-server, ovs-vswitchd, ovs-vsctl,
ovs-ofctl, ovs-appctl, ovsdb-tool), ethtool and iproute2; not the OVS
kernel module (``datapath_type=netdev``) and not the system OVS, which is
never touched. Layout (recipe network-and-guest.md, sections 1b/1c)::

  cdoA<sfx>: ovsdb-server + ovs-vswitchd with OVS_RUNDIR/OVS_DBDIR/OVS_LOGDIR = <tmp>/A
     br-phy (netdev; internal port 10.250.0.1/24 = VTEP) -- ul0 ==veth== ul0 -- br-phy (.2)
     br-ph1 (netdev, physnet1)                           -- ph0 ==veth== ph0 -- br-ph1 (cdoB<sfx>)
     br-cd-int, br-cd-tun: made by the plugin
  cdoE<n><sfx>: eth0 10.251.0.x/24 ==veth== tap<port id> in a host: a port the plugin plugged

NOTE: the VTEP address sits on the internal port of an OVS bridge (br-phy):
the userspace datapath routes tunnel packets only through such ports.
Every daemon runs with its own run directory so that the per-bridge
``<bridge>.mgmt`` sockets never land in the system ``/var/run/openvswitch``.
:meth:`OvsLab.cleanup` stops every daemon it started (by its pid file),
removes every namespace and the state directories, whatever happened.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

from netns_lab import PING, Endpoint, Host
from oslo_config import cfg
from pyroute2 import NetNS, netns

from network_plugins import netlink, ovs

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
UNDERLAY = {"A": "10.250.0.1", "B": "10.250.0.2"}
TOOLS = {
    "ovsdb-server": "openvswitch-switch",
    "ovs-vswitchd": "openvswitch-switch",
    "ovsdb-tool": "openvswitch-switch",
    "ovs-vsctl": "openvswitch-switch",
    "ovs-ofctl": "openvswitch-switch",
    "ovs-appctl": "openvswitch-switch",
    "ethtool": "ethtool",
    "ip": "iproute2",
}


def missing_prerequisites() -> str | None:
    """How to install what is missing, or None."""
    missing = {pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None}
    if not os.path.exists(SCHEMA):
        missing.add("openvswitch-switch")
    if missing:
        return (
            "the OVS functional tests need "
            + ", ".join(sorted(t for t, p in TOOLS.items() if p in missing))
            + f": apt-get install {' '.join(sorted(missing))} (or tools/install-deps.sh)"
        )
    return None


def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    result = subprocess.run(
        list(args), capture_output=True, text=True, env=env, timeout=30, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: rc={result.returncode} {result.stderr.strip()}")
    return result.stdout


class VethTaps(netlink.Netlink):
    """The plugin's tap helper with the taps left to the lab.

    The lab's stand-in for a guest is a namespace joined by a veth whose
    host end has the tap's name (:meth:`OvsLab.endpoint`), made after the
    plug as QEMU attaches after it; a tap has no such other end. So
    :meth:`ensure_tap` makes nothing, and the rest (unplug's delete, the
    checks of :meth:`OvsNetworkPlugin.check_and_resync`) sees the veth.
    The plugin's own taps are tested with ``OvsHost.plugin(taps=True)``
    and, with QEMU, by test_power_cycles.py.
    """

    def ensure_tap(self, name: str, mac: str, mtu: int) -> bool:
        return False


@dataclasses.dataclass
class OvsHost:
    """A simulated compute host: a namespace with its own OVS daemons."""

    name: str
    netns: str
    underlay_ip: str
    state_dir: str
    plugins: list[ovs.OvsNetworkPlugin] = dataclasses.field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        s = self.state_dir
        return dict(os.environ, OVS_RUNDIR=s, OVS_DBDIR=s, OVS_LOGDIR=s)

    @property
    def db(self) -> str:
        return f"unix:{self.state_dir}/db.sock"

    def vsctl(self, *args: str) -> str:
        return run("ovs-vsctl", f"--db={self.db}", "--timeout=10", *args, env=self.env)

    def ofctl(self, *args: str) -> str:
        command, bridge, *rest = args
        target = f"unix:{self.state_dir}/{bridge}.mgmt"
        return run("ovs-ofctl", "-O", "OpenFlow13", command, target, *rest, env=self.env)

    def flows(self, bridge: str) -> str:
        return self.ofctl("dump-flows", bridge)

    def port_record(self, name: str) -> dict[str, Any] | None:
        """What a plug sets on port ``name`` (its VLAN; its interface's keys, numbers, type),
        as ovs-vsctl's JSON shows it; None when there is no such port."""
        port = self._find("Port", name, "tag,vlan_mode,trunks")
        iface = self._find(
            "Interface", name, "external_ids,ofport,ofport_request,mtu_request,type,options"
        )
        return None if port is None or iface is None else {"port": port, "interface": iface}

    def _find(self, table: str, name: str, columns: str) -> dict[str, Any] | None:
        found = json.loads(
            self.vsctl("--format=json", f"--columns={columns}", "find", table, f"name={name}")
        )
        if not found["data"]:
            return None
        return dict(zip(found["headings"], found["data"][0], strict=True))

    def port_flows(self, bridge: str, cookie: int) -> list[str]:
        """The rules of ``bridge`` with exactly ``cookie``, without counters, sorted."""
        out = self.ofctl("dump-flows", bridge, f"cookie={cookie:#x}/-1", "--no-stats")
        return sorted(line.strip() for line in out.splitlines() if "cookie=" in line)

    def in_ns(self, *args: str) -> str:
        return run("ip", "netns", "exec", self.netns, *args, env=self.env)

    def start_vswitchd(self) -> None:
        s = self.state_dir
        self.in_ns(
            "ovs-vswitchd",
            self.db,
            f"--pidfile={s}/ovs-vswitchd.pid",
            f"--log-file={s}/ovs-vswitchd.log",
            f"--unixctl={s}/ovs-vswitchd.ctl",
            "--detach",
            "-vconsole:off",
        )

    def stop_vswitchd(self, cleanup: bool) -> None:
        """``exit`` (``--cleanup``: also remove its datapath devices); waits until it is gone."""
        args = ["exit", "--cleanup"] if cleanup else ["exit"]
        pid = _read_pid(f"{self.state_dir}/ovs-vswitchd.pid")
        run("ovs-appctl", "-t", f"{self.state_dir}/ovs-vswitchd.ctl", *args, check=False)
        _wait_gone(pid)

    def plugin(self, taps: bool = False, **options: object) -> ovs.OvsNetworkPlugin:
        """A plugin for this host; ``taps``: it makes its taps (else :class:`VethTaps`)."""
        conf = cfg.ConfigOpts()
        conf([], project="cdt", default_config_files=[])
        settings: dict[str, object] = {
            "ovsdb_connection": self.db,
            "run_dir": self.state_dir,
            "datapath_type": "netdev",
            "local_ip": self.underlay_ip,
            "bridge_mappings": ["physnet1:br-ph1"],
            "ovsdb_timeout": 10,
            "netns": self.netns,
        }
        settings.update(options)
        # NOTE: a group object per host: oslo.config keeps overrides in the
        # registered group, so two hosts sharing ovs.GROUP would share options.
        conf.register_group(cfg.OptGroup("ovs"))
        conf.register_opts(ovs.OPTS, group="ovs")
        for name, value in settings.items():
            conf.set_override(name, value, group=ovs.GROUP.name)
        plugin = ovs.OvsNetworkPlugin(conf, netlink_api=None if taps else VethTaps(self.netns))
        self.plugins.append(plugin)
        return plugin


class OvsLab:
    """Makes hosts and endpoints; :meth:`cleanup` removes all of them."""

    def __init__(self) -> None:
        self.suffix = secrets.token_hex(3)
        self.namespaces: list[str] = []
        self.hosts: dict[str, OvsHost] = {}
        self.daemon_pids: list[int] = []
        self.state_dirs: list[str] = []
        self._endpoints = 0

    def _netns(self, prefix: str) -> str:
        name = f"{prefix}{self.suffix}"
        netns.create(name)
        self.namespaces.append(name)
        with NetNS(name, flags=0) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    def build_hosts(self) -> tuple[OvsHost, OvsHost]:
        for key, ip in UNDERLAY.items():
            state_dir = tempfile.mkdtemp(prefix=f"cdovs{key}-")
            self.state_dirs.append(state_dir)
            self.hosts[key] = OvsHost(key, self._netns(f"cdo{key}"), ip, state_dir)
        a, b = self.hosts["A"], self.hosts["B"]
        with NetNS(a.netns, flags=0) as ipr:
            for ifname in ("ul0", "ph0"):
                ipr.link(
                    "add", ifname=ifname, kind="veth", peer={"ifname": ifname, "net_ns_fd": b.netns}
                )
        for host in (a, b):
            self._start_ovs(host)
            host.vsctl(
                "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev",
                "--", "add-port", "br-phy", "ul0",
                "--", "add-br", "br-ph1", "--", "set", "bridge", "br-ph1", "datapath_type=netdev",
                "--", "add-port", "br-ph1", "ph0",
            )  # fmt: skip
            with NetNS(host.netns, flags=0) as ipr:
                for ifname in ("ul0", "ph0", "br-phy", "br-ph1"):
                    ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
                index = ipr.link_lookup(ifname="br-phy")[0]
                ipr.addr("add", index=index, address=host.underlay_ip, prefixlen=24)
        # NOTE: the underlay answering both ways before any test: a tunnel
        # packet needs the remote VTEP's MAC, which the userspace datapath
        # learns from ARP on br-phy; a first test that had to wait for that
        # lost all its pings on a busy machine (once in a fresh-clone run).
        for src, dst in ((a, b), (b, a)):
            self._wait_for_underlay(src, dst)
        return a, b

    @staticmethod
    def _wait_for_underlay(src: OvsHost, dst: OvsHost, timeout: float = 30.0) -> None:
        """:raises AssertionError: ``src`` cannot ping ``dst``'s VTEP within ``timeout`` s."""
        if PING is None:
            return  # the tests' pings stand in with TCP connections, which retry
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = subprocess.run(
                ["ip", "netns", "exec", src.netns, PING, "-n", "-q", "-c", "1", "-w", "2",
                 dst.underlay_ip],
                capture_output=True,
                text=True,
            )  # fmt: skip
            if result.returncode == 0:
                return
        raise AssertionError("underlay %s -> %s does not answer" % (src.name, dst.underlay_ip))

    def _start_ovs(self, host: OvsHost) -> None:
        s = host.state_dir
        run("ovsdb-tool", "create", f"{s}/conf.db", SCHEMA, env=host.env)
        host.in_ns(
            "ovsdb-server",
            f"{s}/conf.db",
            f"--remote=punix:{s}/db.sock",
            f"--pidfile={s}/ovsdb-server.pid",
            f"--log-file={s}/ovsdb-server.log",
            f"--unixctl={s}/ovsdb-server.ctl",
            "--detach",
            "-vconsole:off",
        )
        self.daemon_pids.append(_read_pid(f"{s}/ovsdb-server.pid"))
        host.vsctl("--no-wait", "init")
        host.start_vswitchd()

    def endpoint(self, host: OvsHost, tap: str, ip: str, mtu: int) -> Endpoint:
        """What libvirt does when the guest starts: the tap appears (here a veth into a netns)."""
        self._endpoints += 1
        ep_ns = self._netns(f"cdoE{self._endpoints}")
        with NetNS(host.netns, flags=0) as ipr:
            ipr.link("add", ifname=tap, kind="veth", peer={"ifname": "eth0", "net_ns_fd": ep_ns})
            ipr.link("set", index=ipr.link_lookup(ifname=tap)[0], mtu=mtu, state="up")
        with NetNS(ep_ns, flags=0) as ipr:
            index = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=index, mtu=mtu, state="up")
            ipr.addr("add", index=index, address=ip, prefixlen=24)
            mac = ipr.link("get", index=index)[0].get_attr("IFLA_ADDRESS")
        # NOTE: partial checksums from the kernel break TCP through the
        # userspace datapath (recipe gotcha 1).
        run("ip", "netns", "exec", ep_ns, "ethtool", "-K", "eth0", "tx", "off")
        # netns_lab's Endpoint, so that its ping and TCP helpers apply
        return Endpoint(ep_ns, ip, mac, Host(host.name, host.netns, host.underlay_ip), tap)

    def destroy(self, endpoint: Endpoint) -> None:
        """What destroying the guest does: its tap disappears."""
        with NetNS(endpoint.host.netns, flags=0) as ipr:
            found = ipr.link_lookup(ifname=endpoint.tap)
            if found:
                ipr.link("del", index=found[0])

    def cleanup(self) -> None:
        for host in self.hosts.values():
            for plugin in host.plugins:
                try:
                    plugin.close()
                except Exception:  # noqa: BLE001 - clean up the rest regardless
                    pass
        for host in self.hosts.values():
            vswitchd = _read_pid(f"{host.state_dir}/ovs-vswitchd.pid")
            try:
                host.stop_vswitchd(cleanup=True)
            except Exception:  # noqa: BLE001
                pass
            _kill(vswitchd, "ovs-vswitchd")
        for pid in self.daemon_pids:
            _kill(pid, "ovsdb-server")
        for name in reversed(self.namespaces):
            try:
                netns.remove(name)
            except OSError:
                pass
        for state_dir in self.state_dirs:
            shutil.rmtree(state_dir, ignore_errors=True)


def _read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _alive(pid: int, name: str | None = None) -> bool:
    """Whether ``pid`` runs (and, given ``name``, is that program: pids get reused)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        return False
    return name is None or comm == name[:15]


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _kill(pid: int, name: str) -> None:
    """Stop a daemon this lab started (by its own pid), if it still runs."""
    if not _alive(pid, name):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, 5.0):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
