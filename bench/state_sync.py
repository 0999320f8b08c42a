"""One power-state sync cycle: our bulk ``power_states()`` against a per-domain loop.

What is measured, in one process, on the same domains:

* bulk: ``LibvirtDriver.power_states()`` (one ``getAllDomainStats`` for the
  state of every domain, plus one listing of managed-save images because
  some domains are shut off), the dict of UUID -> power state included;
* per domain: what a sync without the bulk API does: for each server
  ``lookupByUUIDString`` + ``info()`` (and ``hasManagedSaveImage()`` for a
  shut-off one), building the same dict.

``--domains`` domains named ``cd-<uuid>`` (minimal ``type='test'`` XML) are
defined; 60% running, 20% paused, 15% shut off, 5% managed-saved. Each side
gets a warm-up cycle, then ``--rounds`` timed cycles, interleaved; the
figures are the medians. Both sides must return the same dict.

Run::

    .venv/bin/python bench/state_sync.py [--domains N] [--rounds N] [--uri URI] [--smoke]

The default URI, ``test:///default``, is libvirt's in-process test driver:
no RPC at all, which flatters the per-domain loop (each of its calls is a
round trip to libvirtd on a real host). ``test+unix:///default?socket=...``
runs the same through a libvirtd. The last line of the output is one JSON
object with ``bulk_ms`` and ``per_domain_ms``; the target for ``bulk_ms`` is
under 100 ms with 5,000 domains.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable

import libvirt
from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver import domain_xml as lvxml
from compute_driver.virt.libvirt.driver import _POWER_STATES, LibvirtDriver, domain_name


def make_driver(uri: str, state_path: str) -> LibvirtDriver:
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("state_path", state_path)
    conf.set_override("uri", uri, group="libvirt")
    driver = LibvirtDriver(conf)
    driver.init_host("bench")
    return driver


def define_domains(conn: libvirt.virConnect, count: int) -> list[libvirt.virDomain]:
    """``count`` domains of ours in a mix of states."""
    made = []
    for i in range(count):
        uuid = str(uuidlib.uuid4())
        domain = lvxml.Domain(
            type="test", name=domain_name(uuid), uuid=uuid, memory_kib=65536, vcpus=1
        )
        domain.os = lvxml.OS(type="hvm")
        virt_dom = conn.defineXML(domain.to_string())
        made.append(virt_dom)
        share = i % 20
        if share < 17:
            virt_dom.create()
        if 12 <= share < 16:
            virt_dom.suspend()
        elif share == 16:
            virt_dom.managedSave()
    return made


def per_domain_states(conn: libvirt.virConnect, uuids: list[str]) -> dict[str, str]:
    """The sync loop without the bulk API: one lookup and one info() per server."""
    states = {}
    for uuid in uuids:
        virt_dom = conn.lookupByUUIDString(uuid)
        state = virt_dom.info()[0]
        power_state = _POWER_STATES.get(state, "nostate")
        if state == libvirt.VIR_DOMAIN_SHUTOFF and virt_dom.hasManagedSaveImage():
            power_state = "suspended"
        states[uuid] = power_state
    return states


def timed(func: Callable[[], dict[str, str]]) -> tuple[float, dict[str, str]]:
    started = time.perf_counter()
    result = func()
    return (time.perf_counter() - started) * 1000, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uri", default="test:///default")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a test run of a few seconds (options given explicitly still win): "
        "--domains 50 --rounds 2",
    )
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(domains=50, rounds=2)
        args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="state-sync-bench-") as state_path:
        driver = make_driver(args.uri, state_path)
        conn = driver.host.get_connection()
        started = time.perf_counter()
        made = define_domains(conn, args.domains)
        print(
            "defined %d domains on %s in %.1f s"
            % (len(made), args.uri, time.perf_counter() - started)
        )
        try:
            uuids = [d.UUIDString() for d in made]
            bulk_ms: list[float] = []
            loop_ms: list[float] = []
            for round_no in range(args.rounds + 1):  # round 0 warms up
                b_ms, bulk = timed(driver.power_states)
                l_ms, loop = timed(lambda: per_domain_states(conn, uuids))
                ours = {u: bulk[u] for u in uuids}
                if ours != loop or len(ours) != len(uuids):
                    print("bulk and per-domain states differ", file=sys.stderr)
                    return 1
                if round_no:
                    bulk_ms.append(b_ms)
                    loop_ms.append(l_ms)
            counts: dict[str, int] = {}
            for state in ours.values():
                counts[state] = counts.get(state, 0) + 1
            print("states: %s" % ", ".join("%s %d" % kv for kv in sorted(counts.items())))
            print(
                "bulk power_states(): median %.1f ms (min %.1f, max %.1f) over %d cycles"
                % (statistics.median(bulk_ms), min(bulk_ms), max(bulk_ms), len(bulk_ms))
            )
            print(
                "per-domain lookup+info(): median %.1f ms (min %.1f, max %.1f)"
                % (statistics.median(loop_ms), min(loop_ms), max(loop_ms))
            )
        finally:
            for virt_dom in made:
                try:
                    if virt_dom.isActive():
                        virt_dom.destroy()
                    virt_dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
                except libvirt.libvirtError:
                    pass
            driver.host.close()
    print(
        json.dumps(
            {
                "bulk_ms": round(statistics.median(bulk_ms), 2),
                "per_domain_ms": round(statistics.median(loop_ms), 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
