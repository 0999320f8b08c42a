"""Plugging 1,000 ports through the ``ovs`` plugin, against raw ovsdbapp and ``ovs-vsctl``.

Three sides, each against a fresh private ovsdb-server + ovs-vswitchd
(``datapath_type=netdev``) that this script starts in a throwaway network
namespace ``cdobench<random>`` with its own OVS_RUNDIR (the system OVS is
never touched), so no side pays for the ports of another:

* ``plugin``: ``OvsNetworkPlugin.plug`` one port at a time (one OVSDB
  transaction plus one OpenFlow 1.4 bundle of the port's anti-spoofing
  rules each, on the plugin's persistent connection to its integration bridge);
* ``raw_txn``: the same OVSDB writes (Interface with external_ids,
  ofport_request and mtu_request; Port with tag; Bridge.ports) as one raw
  ovsdbapp transaction per port, no OpenFlow rules;
* ``vsctl``: the same writes as one ``ovs-vsctl`` process per port.

Then a new plugin instance (a simulated agent restart) resyncs all 1,000
ports (``check_and_resync``: reads OVSDB back, reinstalls every rule).
The ``plugin`` side also makes each port's tap (as on a real host, before
libvirt starts the guest); the other two sides write OVSDB only.

Run as root::

    .venv/bin/python bench/ovs_plug.py [--ports 1000] [--smoke]

The last line is one JSON object: ratio_vs_raw_txn (plugin / raw_txn),
speedup_vs_vsctl (vsctl / plugin), ms_per_port (plugin), resync_ms_per_port.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from oslo_config import cfg
from pyroute2 import netns

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from network_plugins import base, ovs, ovs_db  # noqa: E402

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
LOCAL_IP = "10.250.0.1"
INSTANCE = "0b6f2c5e-7a41-4c1e-9d2a-5b1f0e3c8a01"
MTU = 1450
T = TypeVar("T")
VLAN = 1


class PrivateOvs:
    """ovsdb-server + ovs-vswitchd in namespace ``ns`` with their own run directory."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.dir = tempfile.mkdtemp(prefix="cdobench-")
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_DBDIR=self.dir, OVS_LOGDIR=self.dir)
        self.db = f"unix:{self.dir}/db.sock"
        d = self.dir
        self._run("ovsdb-tool", "create", f"{d}/conf.db", SCHEMA)
        common = ["--detach", "-vconsole:off", "-vfile:info"]
        self._run(
            "ip", "netns", "exec", ns, "ovsdb-server", f"{d}/conf.db",
            f"--remote=punix:{d}/db.sock", f"--pidfile={d}/ovsdb-server.pid",
            f"--log-file={d}/ovsdb-server.log", f"--unixctl={d}/ovsdb-server.ctl", *common,
        )  # fmt: skip
        self._run("ovs-vsctl", f"--db={self.db}", "--no-wait", "init")
        self._run(
            "ip", "netns", "exec", ns, "ovs-vswitchd", self.db,
            f"--pidfile={d}/ovs-vswitchd.pid", f"--log-file={d}/ovs-vswitchd.log",
            f"--unixctl={d}/ovs-vswitchd.ctl", *common,
        )  # fmt: skip

    def _run(self, *args: str, check: bool = True) -> None:
        subprocess.run(list(args), env=self.env, check=check, capture_output=True, timeout=60)

    def add_int_bridge(self) -> None:
        self._run(
            "ovs-vsctl", f"--db={self.db}", "add-br", "br-int",
            "--", "set", "bridge", "br-int", "datapath_type=netdev",
        )  # fmt: skip

    def stop(self) -> None:
        for daemon, extra in (("ovs-vswitchd", ["--cleanup"]), ("ovsdb-server", [])):
            ctl = f"{self.dir}/{daemon}.ctl"
            self._run("ovs-appctl", "-t", ctl, "exit", *extra, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def make_plugin(private: PrivateOvs) -> ovs.OvsNetworkPlugin:
    conf = cfg.ConfigOpts()
    conf([], project="bench", default_config_files=[])
    conf.register_group(cfg.OptGroup("ovs"))  # NOTE: not ovs.GROUP, whose overrides are shared
    conf.register_opts(ovs.OPTS, group="ovs")
    for name, value in {
        "ovsdb_connection": private.db,
        "run_dir": private.dir,
        "datapath_type": "netdev",
        "local_ip": LOCAL_IP,
        "ovsdb_timeout": 30,
        "netns": private.ns,  # the plugin's taps go where its OVS is
    }.items():
        conf.set_override(name, value, group="ovs")
    return ovs.OvsNetworkPlugin(conf)


def make_ports(count: int) -> list[base.Port]:
    network = base.Network(id=str(uuid.uuid4()), name="bench", type="vxlan", segment=4242)
    return [
        base.Port(
            id=str(uuid.uuid4()),
            network=network,
            mac="fa:16:3e:%02x:%02x:%02x" % (i >> 16, (i >> 8) & 255, i & 255),
            addresses=("10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255 or 1),),
        )
        for i in range(count)
    ]


def external_ids(port: base.Port) -> dict[str, str]:
    return {
        ovs.IFACE_PORT: port.id,
        ovs.IFACE_MAC: port.mac,
        ovs.IFACE_INSTANCE: INSTANCE,
        ovs.IFACE_NETWORK: port.network.id,
        ovs.IFACE_ADDRESSES: ",".join(port.addresses),
    }


def side_plugin(private: PrivateOvs, ports: list[base.Port]) -> tuple[float, float]:
    plugin = make_plugin(private)
    plugin.ensure_network(ports[0].network)  # bridges and the network: not per port
    start = time.perf_counter()
    for port in ports:
        plugin.plug(port, INSTANCE)
    plugged = time.perf_counter() - start
    plugin.close()
    fresh = make_plugin(private)  # the agent restarted
    start = time.perf_counter()
    assert fresh.check_and_resync() is True
    resync = time.perf_counter() - start
    assert len(fresh._ports) == len(ports), len(fresh._ports)
    fresh.close()
    return plugged, resync


def side_raw(private: PrivateOvs, ports: list[base.Port]) -> float:
    private.add_int_bridge()
    db = ovs_db.OvsDb(private.db, 30)
    api = db.api
    start = time.perf_counter()
    for i, port in enumerate(ports):
        tap = ovs.tap_name(port.id)
        with api.transaction(check_error=True) as txn:
            iface = txn.add(
                api.db_create(
                    "Interface",
                    name=tap,
                    external_ids=external_ids(port),
                    ofport_request=ovs.OFPORT_GUEST_FIRST + i,
                    mtu_request=MTU,
                )
            )
            row = txn.add(api.db_create("Port", name=tap, interfaces=[iface], tag=VLAN))
            txn.add(api.db_add("Bridge", "br-int", "ports", row))
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def side_vsctl(private: PrivateOvs, ports: list[base.Port]) -> float:
    private.add_int_bridge()
    start = time.perf_counter()
    for i, port in enumerate(ports):
        tap = ovs.tap_name(port.id)
        ids = [f"external_ids:{k}={json.dumps(v)}" for k, v in external_ids(port).items()]
        subprocess.run(
            [
                "ovs-vsctl",
                f"--db={private.db}",
                "--timeout=30",
                "--",
                "--may-exist",
                "add-port",
                "br-int",
                tap,
                "--",
                "set",
                "Port",
                tap,
                f"tag={VLAN}",
                "--",
                "set",
                "Interface",
                tap,
                *ids,
                f"ofport_request={ovs.OFPORT_GUEST_FIRST + i}",
                f"mtu_request={MTU}",
            ],
            env=private.env,
            check=False,
            capture_output=True,
        )  # fmt: skip  (rc 1 is expected: the tap does not exist yet)
    return time.perf_counter() - start


def on_fresh_ovs(ns: str, work: Callable[[PrivateOvs], T]) -> T:
    private = PrivateOvs(ns)
    try:
        return work(private)
    finally:
        private.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ports", type=int, default=1000)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a test run of a few seconds (options given explicitly still win): --ports 10",
    )
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(ports=10)
        args = parser.parse_args()
    if os.geteuid() != 0:
        print("ovs_plug: needs root (network namespace, OVS daemons)", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.CRITICAL)
    ports = make_ports(args.ports)
    ns = "cdobench" + secrets.token_hex(3)
    netns.create(ns)
    try:
        raw = on_fresh_ovs(ns, lambda p: side_raw(p, ports))
        print(f"raw_txn  {raw:.3f} s", flush=True)
        plugged, resync = on_fresh_ovs(ns, lambda p: side_plugin(p, ports))
        print(f"plugin   {plugged:.3f} s  resync {resync:.3f} s", flush=True)
        vsctl = on_fresh_ovs(ns, lambda p: side_vsctl(p, ports))
        print(f"vsctl    {vsctl:.3f} s", flush=True)
    finally:
        netns.remove(ns)
    n = args.ports
    print(
        json.dumps(
            {
                "ports": n,
                "plugin_s": round(plugged, 3),
                "raw_txn_s": round(raw, 3),
                "vsctl_s": round(vsctl, 3),
                "ratio_vs_raw_txn": round(plugged / raw, 2),
                "speedup_vs_vsctl": round(vsctl / plugged, 2),
                "ms_per_port": round(1000 * plugged / n, 3),
                "resync_ms_per_port": round(1000 * resync / n, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
