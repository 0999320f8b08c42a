"""Plugging through pyroute2 (network_plugins/netlink.py) against the ``ip``/``bridge`` commands.

The same ``LinuxBridgePlugin`` runs the same workload twice per round, once
on :class:`netlink.Netlink` (one rtnetlink socket) and once on
:class:`IpCommands`, a subclass that replaces only the kernel-facing
primitives with the equivalent ``ip -n NS ...`` / ``bridge -n NS ...``
processes. So both sides make the same decisions and the same kernel
changes; only the transport differs.

Workload, in a throwaway network namespace ``cdtbench<random>`` (removed at
the end; nothing outside it is touched): 100 VXLAN networks, each told two
remote VTEPs, with 5 ports plugged on each (500 plugs: the first plug of a
network makes its bridge and VXLAN device, the others check them), then
every port unplugged (the last unplug of a network removes both devices).
Between the two phases (untimed) the namespace's devices, their settings
(MTU, state, master, VXLAN id/local/port/learning), their FDB entries and
the namespace's addresses are read back: both sides must leave the same.
Rounds alternate which side goes first.

Run as root::

    .venv/bin/python bench/lb_plug.py [--networks N] [--ports-per-network N] [--rounds N] [--smoke]

The last line of the output is one JSON object with ``speedup_vs_subprocess``
(median subprocess time / median pyroute2 time, whole workload) and the
figures behind it, per phase too. NOTE: the unplug phase is mostly kernel
time, the same for both sides: deleting a net device waits for RCU (about
25-30 ms per device on a 2-vCPU VM), and each network has two.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from oslo_config import cfg
from pyroute2 import NetNS, netns

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from network_plugins import base, linux_bridge, netlink  # noqa: E402

LOCAL_IP = "10.250.0.1"
REMOTES = ["10.250.0.2", "10.250.0.3"]
INSTANCE = "0b6f2c5e-7a41-4c1e-9d2a-5b1f0e3c8a01"


class IpCommands(netlink.Netlink):
    """:class:`netlink.Netlink` with every primitive done by an ``ip``/``bridge`` process."""

    def __init__(self, netns_name: str) -> None:
        # NOTE: no socket to open, so Netlink.__init__ is not called.
        self.netns = netns_name
        self.ns = netns_name
        self._lock = threading.RLock()
        self.processes = 0

    def close(self) -> None:
        pass

    def _run(self, action: str, name: str, *args: str) -> str:
        self.processes += 1
        tool, rest = args[0], args[1:]
        result = subprocess.run(
            [tool, "-n", self.ns, *rest], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise netlink.LinkError(action, name, result.stderr.strip())
        return result.stdout

    def _get(
        self, name: str, known: tuple[netlink.Link, ...] = (), resolve: bool = True
    ) -> netlink.Link | None:
        # NOTE: `ip -j` names the master and the VLAN parent itself, so the
        # hints that spare pyroute2 a lookup by index have nothing to spare here.
        self.processes += 1
        result = subprocess.run(
            ["ip", "-n", self.ns, "-j", "-d", "link", "show", "dev", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return None
        (item,) = json.loads(result.stdout)
        info = item.get("linkinfo", {})
        data: dict[str, Any] = {}
        kind = info.get("info_kind")
        if kind == "vxlan":
            d = info["info_data"]
            data = {
                "id": d["id"],
                "local": d.get("local"),
                "port": d["port"],
                "learning": d["learning"],
            }
        elif kind == "vlan":
            data = {"id": info["info_data"]["id"]}
        return netlink.Link(
            name=item["ifname"],
            index=item["ifindex"],
            kind=kind,
            mtu=item["mtu"],
            up="UP" in item["flags"],
            master=item.get("master"),
            parent=item.get("link") if kind == "vlan" else None,
            data=data,
        )

    def _create(self, name: str, kind: str, **spec: Any) -> None:
        args = ["ip", "link", "add"]
        if kind == "bridge":
            args += [name, "type", "bridge", "stp_state", "0", "forward_delay", "0"]
        elif kind == "vxlan":
            args += [name, "type", "vxlan", "id", str(spec["vni"]), "local", spec["local"]]
            args += ["dstport", str(spec["port"]), "nolearning"]
        else:
            args += [
                "link",
                spec["parent"].name,
                "name",
                name,
                "type",
                "vlan",
                "id",
                str(spec["vid"]),
            ]
        self._run("create " + kind, name, *args)

    def _set(
        self,
        link: netlink.Link,
        mtu: int | None = None,
        master: netlink.Link | None = None,
        up: bool | None = None,
        no_ipv6: bool = False,
    ) -> None:
        if no_ipv6:
            self._run(
                "disable IPv6 on", link.name, "ip", "link", "set", link.name, "addrgenmode", "none"
            )
        args: list[str] = []
        if mtu is not None:
            args += ["mtu", str(mtu)]
        if master is not None:
            args += ["master", master.name]
        if up is not None:
            args += ["up" if up else "down"]
        if args:
            self._run("set", link.name, "ip", "link", "set", link.name, *args)

    def _delete(self, link: netlink.Link) -> None:
        self._run("delete", link.name, "ip", "link", "del", link.name)

    def _ports(self, bridge: netlink.Link) -> list[str]:
        out = self._run(
            "list ports of", bridge.name, "ip", "-j", "link", "show", "master", bridge.name
        )
        return [item["ifname"] for item in json.loads(out or "[]")]

    def _fdb_dump(self, link: netlink.Link) -> set[tuple[str, str]]:
        out = self._run("read fdb of", link.name, "bridge", "-j", "fdb", "show", "dev", link.name)
        return {(item["mac"], item["dst"]) for item in json.loads(out or "[]") if item.get("dst")}

    def _fdb(self, command: str, link: netlink.Link, mac: str, dst: str) -> None:
        self._run(
            command + " fdb", link.name, "bridge", "fdb", command, mac, "dev", link.name, "dst", dst
        )

    def _addresses(self) -> set[str]:
        out = self._run("list", "addresses", "ip", "-j", "addr", "show")
        return {a["local"] for item in json.loads(out) for a in item.get("addr_info", [])}


def make_plugin(ns: str, api: netlink.Netlink) -> linux_bridge.LinuxBridgePlugin:
    conf = cfg.ConfigOpts()
    conf([], project="bench", default_config_files=[])
    conf.register_opts(linux_bridge.OPTS, group=linux_bridge.GROUP)
    conf.set_override("netns", ns, group="linux_bridge")
    conf.set_override("local_ip", LOCAL_IP, group="linux_bridge")
    return linux_bridge.LinuxBridgePlugin(conf, netlink_api=api)


def workload(
    plugin: linux_bridge.LinuxBridgePlugin,
    networks: int,
    per_network: int,
    after_plug: Callable[[], None],
) -> dict:
    """Time the plugs and unplugs; ``after_plug`` runs between them, untimed."""
    # NOTE: the same ids on both sides (uuid5), so both make devices of the
    # same names and their states can be compared.
    nets = [
        base.Network(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"cdtbench/network/{i}")),
            name=f"bench-{i}",
            type="vxlan",
            segment=1000 + i,
        )
        for i in range(networks)
    ]
    ports = [
        base.Port(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"cdtbench/port/{i}/{j}")),
            network=net,
            mac="fa:16:3e:%02x:%02x:%02x" % (i >> 8, i & 255, j),
        )
        for i, net in enumerate(nets)
        for j in range(per_network)
    ]
    start = time.perf_counter()
    for net in nets:
        plugin.update_topology(net, REMOTES)
    for port in ports:
        plugin.plug(port, INSTANCE)
    plug_s = time.perf_counter() - start
    after_plug()
    start = time.perf_counter()
    for port in ports:
        plugin.unplug(port, INSTANCE)
    unplug_s = time.perf_counter() - start
    return {"plug_s": plug_s, "unplug_s": unplug_s, "total_s": plug_s + unplug_s}


def setup_namespace(name: str) -> None:
    netns.create(name)
    with NetNS(name, flags=0) as ipr:
        ipr.link("add", ifname="ul0", kind="veth", peer="ul1")
        for ifname in ("lo", "ul0", "ul1"):
            ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
        ipr.addr("add", index=ipr.link_lookup(ifname="ul0")[0], address=LOCAL_IP, prefixlen=24)


def namespace_state(name: str) -> dict[str, Any]:
    """Every device the plugs made (kind, MTU, state, master, VXLAN settings, FDB) and
    every address of the namespace (an IPv6 link-local on one of ours would show)."""
    devices: dict[str, Any] = {}
    with netlink.Netlink(name) as nl:
        for ifname in sorted(leftovers(name)):
            link = nl.link(ifname)
            assert link is not None, ifname
            fdb = sorted(nl.fdb_entries(ifname)) if link.kind == "vxlan" else []
            devices[ifname] = (link.kind, link.mtu, link.up, link.master, link.data, fdb)
        return {"devices": devices, "addresses": sorted(nl.addresses())}


def leftovers(name: str) -> list[str]:
    with NetNS(name, flags=0) as ipr:
        names = [msg.get_attr("IFLA_IFNAME") for msg in ipr.get_links()]
    return [n for n in names if n not in ("lo", "ul0", "ul1")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=100)
    parser.add_argument("--ports-per-network", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a test run of a few seconds (options given explicitly still win): "
        "--networks 2 --ports-per-network 2",
    )
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(networks=2, ports_per_network=2)
        args = parser.parse_args()
    if os.geteuid() != 0:
        print("lb_plug: needs root (network namespaces)", file=sys.stderr)
        return 1
    ns = "cdtbench" + secrets.token_hex(3)
    setup_namespace(ns)
    results: dict[str, list[dict]] = {"pyroute2": [], "subprocess": []}
    states: dict[str, dict[str, Any]] = {}
    processes = 0
    try:
        for round_no in range(args.rounds):
            order = ["pyroute2", "subprocess"] if round_no % 2 == 0 else ["subprocess", "pyroute2"]
            for side in order:
                api = netlink.Netlink(ns) if side == "pyroute2" else IpCommands(ns)
                plugin = make_plugin(ns, api)

                def check(side: str = side) -> None:
                    states[side] = namespace_state(ns)

                try:
                    figures = workload(plugin, args.networks, args.ports_per_network, check)
                finally:
                    plugin.close()
                if isinstance(api, IpCommands):
                    processes = api.processes
                left = leftovers(ns)
                assert not left, f"{side} left devices behind: {left[:5]}"
                devices = states[side]["devices"]
                assert len(devices) == 2 * args.networks, f"{side} made {len(devices)} devices"
                if len(states) == 2:  # the same devices, settings and FDB on both sides
                    assert states["pyroute2"] == states["subprocess"], "the sides differ"
                results[side].append(figures)
                print(
                    "round %d %-10s plug %.3f s  unplug %.3f s  total %.3f s"
                    % (
                        round_no + 1,
                        side,
                        figures["plug_s"],
                        figures["unplug_s"],
                        figures["total_s"],
                    ),
                    flush=True,
                )
    finally:
        netns.remove(ns)

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in results[side])

    ports = args.networks * args.ports_per_network
    summary = {
        "networks": args.networks,
        "ports": ports,
        "rounds": args.rounds,
        "pyroute2_s": round(median("pyroute2", "total_s"), 3),
        "subprocess_s": round(median("subprocess", "total_s"), 3),
        "pyroute2_plug_ms_per_port": round(1000 * median("pyroute2", "plug_s") / ports, 3),
        "subprocess_plug_ms_per_port": round(1000 * median("subprocess", "plug_s") / ports, 3),
        "subprocess_processes_per_run": processes,
        "plug_speedup": round(median("subprocess", "plug_s") / median("pyroute2", "plug_s"), 1),
        "unplug_speedup": round(
            median("subprocess", "unplug_s") / median("pyroute2", "unplug_s"), 1
        ),
        "speedup_vs_subprocess": round(
            median("subprocess", "total_s") / median("pyroute2", "total_s"), 1
        ),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
