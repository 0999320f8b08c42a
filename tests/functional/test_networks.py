"""Tenant networks through the bus on real TCG guests (Linux bridge + VXLAN on one host).

Three guests: A and B on one network, C on another with the same subnet
(so C gets A's address). Each guest's user data pings a peer and prints
the outcome: B reaches A; C, on its own network, reaches nobody.
"""

from __future__ import annotations

import libvirt
from cloud_env import Cloud, pinger_user_data, wait_for_console


def test_guests_on_one_network_talk_and_other_networks_do_not(
    cloud: Cloud, guest_image: dict, libvirt_conn
) -> None:
    net_a = cloud.ok(
        "network",
        "create",
        "ft-net-a",
        "--type",
        "vxlan",
        "--cidr",
        "10.90.0.0/24",
        "--project",
        "ft",
    )
    net_b = cloud.ok(
        "network",
        "create",
        "ft-net-b",
        "--type",
        "vxlan",
        "--cidr",
        "10.90.0.0/24",
        "--project",
        "ft",
    )
    servers: list[dict] = []
    try:
        assert net_a["segment"] != net_b["segment"] and net_a["segment"] >= 5000
        assert net_a["mtu"] == 1450 and net_a["gateway"] == "10.90.0.1"
        # A taken segment is refused; nothing is stored.
        taken = cloud.ctl(
            "network",
            "create",
            "ft-dup",
            "--type",
            "vxlan",
            "--cidr",
            "10.91.0.0/24",
            "--segment",
            str(net_a["segment"]),
        )
        assert taken.rc == 4 and "segment_in_use" in taken.stderr
        far = cloud.ctl(
            "network",
            "create",
            "ft-far",
            "--type",
            "vxlan",
            "--cidr",
            "10.91.0.0/24",
            "--segment",
            str(2**24),
        )
        assert far.rc == 2

        a = cloud.create_server("ft-net-a1", guest_image["uuid"], "--network", "ft-net-a")
        servers.append(a)
        wait_for_console(cloud, a["uuid"], "CD-GUEST ready")
        b = cloud.create_server(
            "ft-net-a2",
            guest_image["uuid"],
            "--network",
            "ft-net-a",
            user_data=pinger_user_data("10.90.0.2", 60),
        )
        servers.append(b)
        c = cloud.create_server(
            "ft-net-b1",
            guest_image["uuid"],
            "--network",
            "ft-net-b",
            user_data=pinger_user_data("10.90.0.3", 8),
        )
        servers.append(c)

        console_a = wait_for_console(cloud, a["uuid"], "CD-GUEST ready")
        assert "CD-GUEST net if=eth0 addr=10.90.0.2/24" in console_a
        console_b = wait_for_console(cloud, b["uuid"], "CD-GUEST ping 10.90.0.2 ok", timeout=150)
        assert "CD-GUEST net if=eth0 addr=10.90.0.3/24" in console_b
        console_c = wait_for_console(
            cloud, c["uuid"], "CD-GUEST ping 10.90.0.3 failed", timeout=150
        )
        # C has A's address, on its own network.
        assert "CD-GUEST net if=eth0 addr=10.90.0.2/24" in console_c

        # The guests are wired to their network's bridge, with its MTU.
        xml = libvirt_conn.lookupByUUIDString(b["uuid"]).XMLDesc(0)
        assert "<mtu size='1450'/>" in xml and "brq" in xml
        shown = cloud.ok("network", "show", "ft-net-a")
        assert shown["hosts"] == [cloud.host]

        # A network with ports cannot be deleted.
        busy = cloud.ctl("network", "delete", "ft-net-a")
        assert busy.rc == 4 and "in_use" in busy.stderr
    finally:
        for server in servers:
            cloud.ctl("server", "delete", server["uuid"], "--wait")
        for name in ("ft-net-a", "ft-net-b"):
            cloud.ctl("network", "delete", name)
    assert [n for n in cloud.ok("network", "list") if n["name"].startswith("ft-net")] == []


NIC_WATCHER = r"""#!/bin/sh
watch() {
    seen=" "
    while :; do
        now=" "
        for d in /sys/class/net/eth*; do
            [ -e "$d/address" ] || continue
            key="${d##*/}=$(cat "$d/address")"
            now="$now$key "
            case "$seen" in *" $key "*) ;; *) echo "CD-GUEST nic ${key%%=*} mac=${key#*=}" ;; esac
        done
        for k in $seen; do
            case "$now" in *" $k "*) ;; *) echo "CD-GUEST nic-gone ${k%%=*}" ;; esac
        done
        seen="$now"
        sleep 0.3
    done
}
watch </dev/null >/dev/console 2>&1 &
"""


def test_interfaces_attach_and_detach_on_a_running_guest(
    cloud: Cloud, guest_image: dict, libvirt_conn
) -> None:
    cloud.ok(
        "network",
        "create",
        "ft-if-a",
        "--type",
        "vxlan",
        "--cidr",
        "10.92.0.0/24",
        "--project",
        "ft",
    )
    cloud.ok(
        "network",
        "create",
        "ft-if-b",
        "--type",
        "vxlan",
        "--cidr",
        "10.93.0.0/24",
        "--project",
        "ft",
    )
    cloud.ok(
        "network",
        "create",
        "ft-if-x",
        "--type",
        "vxlan",
        "--cidr",
        "10.94.0.0/24",
        "--project",
        "other",
    )
    server = cloud.create_server(
        "ft-if", guest_image["uuid"], "--network", "ft-if-a", user_data=NIC_WATCHER.encode()
    )
    uuid = server["uuid"]
    try:
        wait_for_console(cloud, uuid, "CD-GUEST ready")
        port = cloud.ok("server", "interface", "attach", uuid, "ft-if-b")
        assert port["device_index"] == 1 and port["address"] == "10.93.0.2/24"
        wait_for_console(cloud, uuid, "CD-GUEST nic eth1 mac=%s" % port["mac"], timeout=60)
        dom = libvirt_conn.lookupByUUIDString(uuid)
        assert port["mac"] in dom.XMLDesc(0)
        assert port["mac"] in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        listed = cloud.ok("server", "interface", "list", uuid)
        assert [p["network_name"] for p in listed] == ["ft-if-a", "ft-if-b"]

        refused = cloud.ctl("server", "interface", "attach", uuid, "ft-if-x")
        assert refused.rc == 4 and "project_mismatch" in refused.stderr

        cloud.ok("server", "interface", "detach", uuid, port["uuid"])
        wait_for_console(cloud, uuid, "CD-GUEST nic-gone eth1", timeout=60)
        dom = libvirt_conn.lookupByUUIDString(uuid)
        assert port["mac"] not in dom.XMLDesc(0)
        assert port["mac"] not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert len(cloud.ok("server", "interface", "list", uuid)) == 1
        assert cloud.ok("network", "show", "ft-if-b")["hosts"] == []
    finally:
        cloud.ctl("server", "delete", uuid, "--wait")
        for name in ("ft-if-a", "ft-if-b", "ft-if-x"):
            cloud.ctl("network", "delete", name)
