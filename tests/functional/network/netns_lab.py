"""Two simulated hosts in network namespaces, and tenant endpoints plugged into their bridges.

Helpers of the functional network tests (their fixtures are in conftest.py).

Needs root and a kernel with network namespaces, veth, bridges and VXLAN;
not the compute-driver services (no RabbitMQ, no libvirt). Layout (recipe
network-and-guest.md, section 1)::

    cdtA<sfx>  ul0 10.250.0.1/24 ==veth== ul0 10.250.0.2/24  cdtB<sfx>  (VTEPs; physnet "underlay")
               ph0 (no address)  ==veth== ph0 (no address)              ("physnet1", for flat)
    cdtE<n><sfx>: eth0 10.251.0.x/24 ==veth== cdtt<n> in a host, a port of a plugin's bridge

Every tenant endpoint is in ONE subnet (10.251.0.0/24), so a failed ping
between networks proves L2 isolation rather than a missing route. Names
carry a random suffix so that parallel runs do not clash; every namespace
is removed at teardown, whatever happened (that removes all their devices).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field

from oslo_config import cfg
from pyroute2 import NetNS, netns

from network_plugins import linux_bridge, netlink

UNDERLAY = {"A": "10.250.0.1", "B": "10.250.0.2"}
PING = shutil.which("ping")


@dataclass
class Host:
    """A simulated compute host: a namespace with the underlay and physnet veths."""

    name: str  # "A" or "B"
    netns: str
    underlay_ip: str
    plugins: list[linux_bridge.LinuxBridgePlugin] = field(default_factory=list)

    def netlink(self) -> netlink.Netlink:
        return netlink.Netlink(self.netns)

    def links(self) -> set[str]:
        with NetNS(self.netns, flags=0) as ipr:
            return {msg.get_attr("IFLA_IFNAME") for msg in ipr.get_links()}


@dataclass
class Endpoint:
    """A stand-in for a guest NIC: ``eth0`` in its own namespace, its peer in a bridge."""

    netns: str
    ip: str
    mac: str
    host: Host
    tap: str  # the host-side veth, as libvirt's tap would be


class Lab:
    """Creates namespaces, hosts and endpoints, and removes them all in :meth:`cleanup`."""

    def __init__(self) -> None:
        self.suffix = secrets.token_hex(3)
        self.namespaces: list[str] = []
        self.hosts: dict[str, Host] = {}
        self._endpoints = 0

    def add_netns(self, prefix: str) -> str:
        name = f"{prefix}{self.suffix}"
        netns.create(name)
        self.namespaces.append(name)
        with NetNS(name, flags=0) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    def build_hosts(self) -> tuple[Host, Host]:
        for key, ip in UNDERLAY.items():
            self.hosts[key] = Host(key, self.add_netns(f"cdt{key}"), ip)
        a, b = self.hosts["A"], self.hosts["B"]
        with NetNS(a.netns, flags=0) as ipr:
            for ifname in ("ul0", "ph0"):
                ipr.link(
                    "add", ifname=ifname, kind="veth", peer={"ifname": ifname, "net_ns_fd": b.netns}
                )
        for host in (a, b):
            with NetNS(host.netns, flags=0) as ipr:
                for ifname in ("ul0", "ph0"):
                    ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
                ipr.addr(
                    "add",
                    index=ipr.link_lookup(ifname="ul0")[0],
                    address=host.underlay_ip,
                    prefixlen=24,
                )
        return a, b

    def plugin(self, host: Host, **options: object) -> linux_bridge.LinuxBridgePlugin:
        """A plugin working in ``host``'s namespace (physnet1 = ph0, underlay = ul0)."""
        conf = cfg.ConfigOpts()
        conf([], project="cdt", default_config_files=[])
        defaults: dict[str, object] = {
            "netns": host.netns,
            "local_ip": host.underlay_ip,
            "physical_interface_mappings": ["physnet1:ph0", "underlay:ul0"],
        }
        defaults.update(options)
        conf.register_opts(linux_bridge.OPTS, group=linux_bridge.GROUP)
        for name, value in defaults.items():
            conf.set_override(name, value, group=linux_bridge.GROUP.name)
        plugin = linux_bridge.LinuxBridgePlugin(conf)
        host.plugins.append(plugin)
        return plugin

    def endpoint(
        self, host: Host, bridge: str, ip: str, mtu: int, tap: str | None = None
    ) -> Endpoint:
        """A namespace whose ``eth0`` (``ip``/24, ``mtu``) is a veth into ``bridge`` on ``host``;
        its host end is named ``tap`` (what libvirt is told in ``<target dev=>``) if given."""
        self._endpoints += 1
        tap = tap or f"cdtt{self._endpoints}"
        ep_ns = self.add_netns(f"cdtE{self._endpoints}")
        with NetNS(host.netns, flags=0) as ipr:
            ipr.link("add", ifname=tap, kind="veth", peer={"ifname": "eth0", "net_ns_fd": ep_ns})
        with host.netlink() as nl:  # what libvirt does with its tap
            nl.enslave(tap, bridge, mtu)
        with NetNS(ep_ns, flags=0) as ipr:
            index = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=index, mtu=mtu, state="up")
            ipr.addr("add", index=index, address=ip, prefixlen=24)
            mac = ipr.link("get", index=index)[0].get_attr("IFLA_ADDRESS")
        return Endpoint(ep_ns, ip, mac, host, tap)

    def destroy(self, endpoint: Endpoint) -> None:
        """What destroying the guest does: its tap leaves the bridge and disappears."""
        with endpoint.host.netlink() as nl:
            nl.delete(endpoint.tap)

    def cleanup(self) -> None:
        for host in self.hosts.values():
            for plugin in host.plugins:
                plugin.close()
        for name in reversed(self.namespaces):
            try:
                netns.remove(name)
            except OSError:
                pass


def ping(
    src: Endpoint, dst: Endpoint, count: int = 3, size: int | None = None, deadline: int = 5
) -> int:
    """Echo replies ``src`` gets from ``dst`` (pings until ``count`` replies or ``deadline`` s).

    Without ``ping`` (iputils-ping), a TCP connection stands in: ``count`` when it connects, else 0.
    """
    if PING is None:
        return count if tcp_connects(src, dst, timeout=deadline) else 0
    args = ["ip", "netns", "exec", src.netns, PING, "-n", "-q", "-c", str(count), "-i", "0.2"]
    if size is not None:
        args += ["-M", "do", "-s", str(size)]  # no fragmentation: proves the MTU fits
    args += ["-w", str(deadline), dst.ip]
    result = subprocess.run(args, capture_output=True, text=True, timeout=deadline + 10)
    match = re.search(r"(\d+) received", result.stdout)
    assert match, (args, result.stdout, result.stderr)
    return int(match.group(1))


def pings(pairs: list[tuple[Endpoint, Endpoint]], deadline: int = 5) -> list[int]:
    """:func:`ping` of several pairs at once (the failing ones each wait for the deadline)."""
    results: list[int] = [-1] * len(pairs)

    def run(i: int, src: Endpoint, dst: Endpoint) -> None:
        results[i] = ping(src, dst, deadline=deadline)

    threads = [threading.Thread(target=run, args=(i, *pair)) for i, pair in enumerate(pairs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _socket_in(ns: str) -> socket.socket:
    return netns.create_socket(ns, socket.AF_INET, socket.SOCK_STREAM, flags=0)


def tcp_connects(src: Endpoint, dst: Endpoint, timeout: float, port: int = 5202) -> bool:
    """Whether ``src`` can open a TCP connection to a listener on ``dst``."""
    server = _socket_in(dst.netns)
    try:
        server.bind((dst.ip, port))
        server.listen(1)
        client = _socket_in(src.netns)
        client.settimeout(timeout)
        with client:
            try:
                client.connect((dst.ip, port))
            except OSError:
                return False
            return True
    finally:
        server.close()


def tcp_transfer(src: Endpoint, dst: Endpoint, size: int, port: int = 5201) -> tuple[str, str]:
    """Send ``size`` random bytes from ``src`` to ``dst`` over TCP; (sent, received) SHA-256."""
    payload = os.urandom(size)
    server = _socket_in(dst.netns)
    server.bind((dst.ip, port))
    server.listen(1)
    server.settimeout(10)
    received = hashlib.sha256()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            while chunk := conn.recv(65536):
                received.update(chunk)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client = _socket_in(src.netns)
        client.settimeout(10)
        with client:
            client.connect((dst.ip, port))
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
        thread.join(15)
    finally:
        server.close()
    return hashlib.sha256(payload).hexdigest(), received.hexdigest()
