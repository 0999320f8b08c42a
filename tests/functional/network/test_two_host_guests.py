"""Real TCG guests on two simulated hosts, through the bus: one tenant network spans both.

Hosts A and B are network namespaces joined by a veth underlay, each with
its own libvirtd and agent (see two_host_cloud.py); our scheduler places the
servers and the ``linux_bridge`` plugin ties each host's bridge to kernel
VXLAN devices. Tenant P1's network X and tenant P2's network Y have the
same CIDR:

* guest 1 on A and guest 2 on B, both on X, ping each other (over VXLAN);
* guest 3 on B, on Y, keeps pinging guest 1's address: while X works, no reply.

X's gateway is moved to .254 so that guest 1 gets .1 and guest 2 .2; on Y
(gateway .1) guest 3 gets .2, guest 2's address. So guest 3's target, .1,
is not its own address: a reply could only come from guest 1, across
networks.
"""

from __future__ import annotations

import re
import time

import libvirt
from cloud_env import pinger_user_data, wait_for_console
from two_host_cloud import SimHost, TwoHostCloud, flood_destinations, links, wait_until

from network_plugins.linux_bridge import bridge_name, vxlan_name

CIDR = "10.97.0.0/24"
GUEST1_IP, GUEST2_IP = "10.97.0.1", "10.97.0.2"

# Pings ``target`` once a second and prints every outcome, "ok" or "lost",
# numbered: the test reads how many failed while the other network worked.
PROBE = """#!/bin/sh
(
i=0
while [ $i -lt %(tries)d ]; do
    i=$((i + 1))
    if ping -c 1 -W 1 %(target)s >/dev/null 2>&1; then
        echo "CD-GUEST probe %(target)s try $i: ok"
    else
        echo "CD-GUEST probe %(target)s try $i: lost"
    fi
    sleep 1
done
) </dev/null >/dev/console 2>&1 &
"""


def _script(template: str, target: str, tries: int) -> bytes:
    return (template % {"target": target, "tries": tries}).encode()


def _domains(host: SimHost) -> set[str]:
    """UUIDs of the domains of ``host``'s own libvirtd."""
    conn = libvirt.open(host.libvirtd.uri)
    try:
        return {dom.UUIDString() for dom in conn.listAllDomains()}
    finally:
        conn.close()


def _taps(on_host: dict[str, dict], bridge: str) -> list[str]:
    """MACs of the ports of ``bridge`` other than its VXLAN device."""
    return [
        link["address"]
        for link in on_host.values()
        if link.get("master") == bridge and link.get("linkinfo", {}).get("info_kind") != "vxlan"
    ]


def _tap_mac(cloud: TwoHostCloud, server: dict) -> str:
    """The MAC libvirt gives the tap of the server's one port: fe: and the guest's last five."""
    (port,) = cloud.ok("server", "interface", "list", server["uuid"])
    return "fe" + port["mac"][2:]


def test_guests_on_two_hosts_talk_over_vxlan_and_another_tenant_does_not(
    two_host_cloud: TwoHostCloud, tmp_path
) -> None:
    cloud = two_host_cloud
    started = time.monotonic()
    host_a, host_b = cloud.hosts["A"], cloud.hosts["B"]
    image = cloud.import_test_guest()
    vxlan = ["network", "create", "--type", "vxlan", "--cidr", CIDR]
    net_x = cloud.ok(*vxlan, "cdt-x", "--gateway", "10.97.0.254", "--project", "p1")
    net_y = cloud.ok(*vxlan, "cdt-y", "--project", "p2")
    assert net_x["segment"] != net_y["segment"]
    vx_x, vx_y = vxlan_name(net_x["segment"]), vxlan_name(net_y["segment"])
    br_x, br_y = bridge_name(net_x["uuid"]), bridge_name(net_y["uuid"])

    # All three boot at once (TCG boots are the slow part); each pins its host.
    # Guests 1 and 2 keep pinging each other until both are up; guest 3 keeps
    # probing guest 1's address (for longer than the test lasts).
    plan = [
        ("cdt-g1", host_a, "p1", "cdt-x", pinger_user_data(GUEST2_IP, 150)),
        ("cdt-g2", host_b, "p1", "cdt-x", pinger_user_data(GUEST1_IP, 150)),
        ("cdt-g3", host_b, "p2", "cdt-y", _script(PROBE, GUEST1_IP, 600)),
    ]
    servers = []
    for name, host, project, network, user_data in plan:
        path = tmp_path / (name + ".sh")
        path.write_bytes(user_data)
        args = ["--flavor", "m1.tiny", "--image", image["uuid"], "--project", project]
        args += ["--network", network, "--host", host.name, "--user-data", str(path)]
        servers.append(cloud.ok("server", "create", name, *args))
    g1, g2, g3 = (cloud.wait_for_active(s["uuid"]) for s in servers)
    timings = {"active": time.monotonic() - started}
    assert [g1["host"], g2["host"], g3["host"]] == [host_a.name, host_b.name, host_b.name]

    # Each guest runs under its own host's libvirtd.
    assert _domains(host_a) == {g1["uuid"]} and _domains(host_b) == {g2["uuid"], g3["uuid"]}

    # Each host's namespace holds its own devices: X on both, Y only on B,
    # VXLAN devices with the network's VNI and the host's own VTEP.
    on_a, on_b = links(host_a.netns), links(host_b.netns)
    assert {br_x, vx_x} <= on_a.keys() and not {br_y, vx_y} & on_a.keys()
    assert {br_x, vx_x, br_y, vx_y} <= on_b.keys()
    for on, host in ((on_a, host_a), (on_b, host_b)):
        vxlan_x = on[vx_x]["linkinfo"]["info_data"]
        assert (vxlan_x["id"], vxlan_x["local"]) == (net_x["segment"], host.net.underlay_ip)
    # The taps are libvirt's, made in that namespace by the libvirtd inside it,
    # each in its network's bridge (libvirt gives a tap its guest's MAC with fe: first).
    assert _taps(on_a, br_x) == [_tap_mac(cloud, g1)]
    assert _taps(on_b, br_x) == [_tap_mac(cloud, g2)]
    assert _taps(on_b, br_y) == [_tap_mac(cloud, g3)]
    assert {link["mtu"] for link in on_b.values() if link.get("master") == br_x} == {1450}
    # The scheduler told each host of X about the other's VTEP (flood entries);
    # Y spans one host, so its device floods nowhere.
    wait_until(
        lambda: flood_destinations(host_a.netns, vx_x) == {host_b.net.underlay_ip},
        "A's flood entries of X",
    )
    wait_until(
        lambda: flood_destinations(host_b.netns, vx_x) == {host_a.net.underlay_ip},
        "B's flood entries of X",
    )
    assert flood_destinations(host_b.netns, vx_y) == set()
    assert cloud.ok("network", "show", "cdt-x")["hosts"] == sorted([host_a.name, host_b.name])

    # Guest 1 (A) and guest 2 (B) reach each other; guest 3, on Y with the
    # same CIDR, gets no reply from guest 1's address.
    console_1 = wait_for_console(cloud.api, g1["uuid"], "CD-GUEST ping %s ok" % GUEST2_IP, 180)
    console_2 = wait_for_console(cloud.api, g2["uuid"], "CD-GUEST ping %s ok" % GUEST1_IP, 60)
    assert "CD-GUEST net if=eth0 addr=%s/24" % GUEST1_IP in console_1
    assert "CD-GUEST net if=eth0 addr=%s/24" % GUEST2_IP in console_2
    timings["guests 1, 2 talk"] = time.monotonic() - started
    # While X works, guest 3's probes of guest 1's address, on Y, all go
    # unanswered: three more of them after this point, none ever "ok".
    probe = "CD-GUEST probe %s try" % GUEST1_IP
    before = cloud.ok("server", "console-log", g3["uuid"], "--lines", "2000").count(probe)
    console_3 = wait_for_console(cloud.api, g3["uuid"], "%s %d: lost" % (probe, before + 3), 120)
    assert "CD-GUEST net if=eth0 addr=%s/24" % GUEST2_IP in console_3
    assert not re.search(r"%s \d+: ok" % re.escape(probe), console_3)
    timings["guest 3 lost 3 more"] = time.monotonic() - started

    # The last port of X on A goes: A's VXLAN device and bridge of X go with
    # it, and B no longer floods X's traffic to A. B's devices stay.
    cloud.ok("server", "delete", g1["uuid"], "--wait")
    wait_until(lambda: not {br_x, vx_x} & links(host_a.netns).keys(), "X gone from A")
    wait_until(lambda: flood_destinations(host_b.netns, vx_x) == set(), "B stops flooding to A")
    assert {br_x, vx_x, br_y, vx_y} <= links(host_b.netns).keys()
    assert cloud.ok("network", "show", "cdt-x")["hosts"] == [host_b.name]

    timings["guest 1 deleted"] = time.monotonic() - started
    # Seen with pytest -s: where the time goes (the TCG boots, mostly).
    print(", ".join("%s %.1f s" % item for item in timings.items()))
