"""Volumes through the bus on real TCG guests: hot attach and detach, a marker
that moves with the volume, resize seen by the guest, snapshot and revert.

Each guest runs a small watcher from its user data: for every virtio disk
that appears (or changes size) it prints ``CD-GUEST disk vdX sectors=N
marker=[M]`` and, when the marker is ``FROM``, writes ``TO`` over it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import libvirt
from cloud_env import Cloud, guest_import_args, wait_for_console

from compute_driver import domain_xml as lvxml

WATCHER = r"""#!/bin/sh
FROM='%(from)s'
TO='%(to)s'
watch() {
    seen=" "
    while :; do
        now=" "
        for d in /sys/block/vd*; do
            n=${d##*/}
            [ "$n" = vda ] && continue
            size=$(cat "$d/size" 2>/dev/null)
            # A disk being hot-plugged shows up before its size is known.
            case "$size" in ""|0) continue ;; esac
            key="$n:$size"
            now="$now$key "
            case "$seen" in *" $key "*) continue ;; esac
            m=$(dd if="/dev/$n" bs=32 count=1 2>/dev/null | tr -cd 'a-z0-9-')
            echo "CD-GUEST disk $n sectors=$size marker=[$m]"
            if [ -n "$TO" ] && [ "$m" = "$FROM" ]; then
                printf '%%s' "$TO" | dd of="/dev/$n" bs=32 count=1 conv=sync,fsync 2>/dev/null
                echo "CD-GUEST wrote $n $TO"
            fi
        done
        for k in $seen; do
            case "$now" in *" $k "*) ;; *) echo "CD-GUEST disk-gone ${k%%%%:*}" ;; esac
        done
        seen="$now"
        sleep 0.3
    done
}
watch </dev/null >/dev/console 2>&1 &
"""
GiB_SECTORS = 1024**3 // 512


def _watcher(from_marker: str, to_marker: str) -> bytes:
    return (WATCHER % {"from": from_marker, "to": to_marker}).encode()


def _wait_count(cloud: Cloud, server: str, marker: str, count: int, timeout: float = 90) -> str:
    """Wait until ``marker`` is in the console ``count`` times."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = cloud.ok("server", "console-log", server, "--lines", "2000")
        if text.count(marker) >= count:
            return text
        time.sleep(0.5)
    raise AssertionError("%r not %d times in %s's console:\n%s" % (marker, count, server, text))


def test_volume_moves_between_guests_with_its_data(
    cloud: Cloud, guest_image: dict, libvirt_conn
) -> None:
    writer = cloud.create_server("ft-vol-a", guest_image["uuid"], user_data=_watcher("", "alpha"))
    reader = cloud.create_server(
        "ft-vol-b", guest_image["uuid"], user_data=_watcher("alpha", "beta")
    )
    volume = None
    try:
        for server in (writer, reader):
            wait_for_console(cloud, server["uuid"], "CD-GUEST ready")
        volume = cloud.ok(
            "volume", "create", "ft-data", "--size", "1", "--backend", "dir", "--project", "ft"
        )
        assert volume["status"] == "available" and volume["size_gb"] == 1

        # Hot attach: the writer sees an empty disk and writes its marker.
        attached = cloud.ok("volume", "attach", writer["uuid"], volume["uuid"])
        assert (attached["status"], attached["target_dev"]) == ("in-use", "vdb")
        dom = libvirt_conn.lookupByUUIDString(writer["uuid"])
        assert "ua-vol-%s" % volume["uuid"] in dom.XMLDesc(0)
        assert volume["uuid"] in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        _wait_count(cloud, writer["uuid"], "CD-GUEST wrote vdb alpha", 1)

        # An attached volume cannot be deleted, nor attached twice.
        refused = cloud.ctl("volume", "delete", volume["uuid"])
        assert refused.rc == 4 and "volume_state_conflict" in refused.stderr
        refused = cloud.ctl("volume", "attach", reader["uuid"], volume["uuid"])
        assert refused.rc == 4 and "volume_state_conflict" in refused.stderr

        # Hot detach waits for the guest to release the disk.
        detached = cloud.ok("volume", "detach", writer["uuid"], volume["uuid"])
        assert (detached["status"], detached["attached_to"]) == ("available", None)
        _wait_count(cloud, writer["uuid"], "CD-GUEST disk-gone vdb", 1)
        dom = libvirt_conn.lookupByUUIDString(writer["uuid"])
        assert volume["uuid"] not in dom.XMLDesc(0)
        assert volume["uuid"] not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

        # A snapshot holds "alpha"; the reader then reads it and writes "beta".
        cloud.ok("volume", "snapshot", "create", volume["uuid"], "s1")
        snaps = cloud.ok("volume", "snapshot", "list", volume["uuid"])
        assert [s["name"] for s in snaps] == ["s1"]
        cloud.ok("volume", "attach", reader["uuid"], volume["uuid"])
        console = _wait_count(cloud, reader["uuid"], "CD-GUEST wrote vdb beta", 1)
        assert "CD-GUEST disk vdb sectors=%d marker=[alpha]" % GiB_SECTORS in console

        # Grown while attached: the running guest sees the new size.
        grown = cloud.ok("volume", "resize", volume["uuid"], "--size", "2")
        assert grown["size_gb"] == 2 and grown["status"] == "in-use"
        _wait_count(
            cloud,
            reader["uuid"],
            "CD-GUEST disk vdb sectors=%d marker=[beta]" % (2 * GiB_SECTORS),
            1,
        )
        refused = cloud.ctl("volume", "resize", volume["uuid"], "--size", "1")
        assert refused.rc == 2 and "invalid_volume_size" in refused.stderr

        # Revert needs the volume detached; afterwards "alpha" is back.
        refused = cloud.ctl("volume", "snapshot", "revert", volume["uuid"], "s1")
        assert refused.rc == 4 and "volume_state_conflict" in refused.stderr
        cloud.ok("volume", "detach", reader["uuid"], volume["uuid"])
        cloud.ok("volume", "snapshot", "revert", volume["uuid"], "s1")
        cloud.ok("volume", "attach", reader["uuid"], volume["uuid"])
        console = _wait_count(cloud, reader["uuid"], "CD-GUEST wrote vdb beta", 2)
        assert console.count("marker=[alpha]") == 2

        # Another project's volume is refused; a deleted server frees its volume.
        other = cloud.ok(
            "volume", "create", "ft-other", "--size", "1", "--backend", "dir", "--project", "x"
        )
        refused = cloud.ctl("volume", "attach", writer["uuid"], other["uuid"])
        assert refused.rc == 4 and "project_mismatch" in refused.stderr
        cloud.ok("volume", "delete", other["uuid"])
        cloud.ok("server", "delete", reader["uuid"], "--wait")
        freed = cloud.ok("volume", "show", volume["uuid"])
        assert (freed["status"], freed["attached_to"]) == ("available", None)
    finally:
        for server in (writer, reader):
            cloud.ctl("server", "delete", server["uuid"], "--wait")
        if volume is not None:
            cloud.ctl("volume", "delete", volume["uuid"])
    assert cloud.ctl("volume", "show", volume["uuid"]).rc == 3


def test_bad_volume_names_and_sizes_are_refused(cloud: Cloud) -> None:
    for name in ("../etc", "a/b", "<x>", "a&b", "..", "a\x01b"):
        result = cloud.ctl("volume", "create", name, "--size", "1", "--backend", "dir")
        assert result.rc == 2 and "invalid_payload" in result.stderr, (name, result)
    result = cloud.ctl("volume", "create", "ft-neg", "--size", "-1", "--backend", "dir")
    assert result.rc == 2
    result = cloud.ctl("volume", "create", "ft-nb", "--size", "1", "--backend", "nosuch")
    assert result.rc == 1 and "no_valid_host" in result.stderr
    assert all(v["name"] not in ("ft-neg", "ft-nb") for v in cloud.ok("volume", "list"))


def test_server_boots_from_a_volume_that_outlives_it(cloud: Cloud, guest_image: dict) -> None:
    volume = cloud.ok(
        "volume",
        "create",
        "ft-boot",
        "--size",
        "1",
        "--backend",
        "dir",
        "--project",
        "ft",
        "--image",
        guest_image["uuid"],
    )
    server = None
    try:
        # A linked clone of the cached image, checked with qemu-img itself.
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "-U", "--output=json", volume["location"]],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        assert info["format"] == "qcow2" and info.get("backing-filename"), info
        server = cloud.create_server("ft-bootvol", guest_image["uuid"], "--boot-volume", "ft-boot")
        wait_for_console(cloud, server["uuid"], "CD-GUEST ready")
        booted = cloud.ok("volume", "show", volume["uuid"])
        assert (booted["status"], booted["boot"], booted["target_dev"]) == ("in-use", True, "vda")
        refused = cloud.ctl("volume", "detach", server["uuid"], volume["uuid"])
        assert refused.rc == 4 and "boot disk" in refused.stderr
        cloud.ok("server", "delete", server["uuid"], "--wait")
        server = None
        kept = cloud.ok("volume", "show", volume["uuid"])
        assert (kept["status"], kept["boot"]) == ("available", False)
        assert os.path.exists(volume["location"])
    finally:
        if server is not None:
            cloud.ctl("server", "delete", server["uuid"], "--wait")
        cloud.ctl("volume", "delete", volume["uuid"])
    assert not os.path.exists(volume["location"])


def _volume_disk(dom: libvirt.virDomain, volume_id: str, flags: int = 0) -> lvxml.Disk | None:
    """The disk of ``volume_id`` in the domain, found by its alias."""
    parsed = lvxml.Domain.parse(dom.XMLDesc(flags))
    alias = "ua-vol-" + volume_id
    return next((d for d in parsed.devices_of(lvxml.Disk) if d.alias == alias), None)


def _root_disk(dom: libvirt.virDomain, uuid: str, flags: int = 0) -> lvxml.Disk | None:
    """The server's root disk, found by its file (the test trusts no name of ours)."""
    parsed = lvxml.Domain.parse(dom.XMLDesc(flags))
    return next(
        (d for d in parsed.devices_of(lvxml.Disk) if uuid + "_root" in (d.source_file or "")),
        None,
    )


def _looks(dom: libvirt.virDomain, volume_id: str) -> list[tuple | None]:
    """What the guest sees of a volume, live and in the definition."""
    looks = []
    for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
        disk = _volume_disk(dom, volume_id, flags)
        if disk is None:
            looks.append(None)
            continue
        looks.append(
            (
                disk.target_bus,
                disk.target_dev,
                disk.serial,
                disk.alias,
                disk.cache,
                disk.total_iops_sec,
            )
        )
    return looks


def test_a_volume_on_a_scsi_guest_stays_itself_and_the_root_is_never_touched(
    cloud: Cloud, libvirt_conn
) -> None:
    """Issue 12, items 10 and 11: attach, hard reboot, stop/start, resize, detach
    on an image with hw_disk_bus=scsi and a flavor with a disk iops limit."""
    image = cloud.ok(
        *guest_import_args(
            "ft-scsi-disks",
            "--property",
            "hw_disk_bus=scsi",
            "--property",
            "hw_disk_cache=writeback",
        )
    )
    cloud.ok(
        "flavor", "create", "ft.iops", "--vcpus", "1", "--ram", "256", "--disk", "1",
        "--property", "quota:disk_total_iops_sec=4000",
    )  # fmt: skip
    server = volume = None
    try:
        server = cloud.ok(
            "server", "create", "ft-scsi", "--flavor", "ft.iops", "--image", image["uuid"],
            "--project", "ft", "--wait",
        )  # fmt: skip
        uuid = server["uuid"]
        wait_for_console(cloud, uuid, "CD-GUEST ready")
        volume = cloud.ok(
            "volume", "create", "ft-scsi-data", "--size", "1", "--backend", "dir", "--project", "ft"
        )
        attached = cloud.ok("volume", "attach", uuid, volume["uuid"])
        dom = libvirt_conn.lookupByUUIDString(uuid)
        root_size = dom.blockInfo("sda")[0]
        looks = {"attach": _looks(dom, volume["uuid"])}
        cloud.ok("server", "reboot", uuid, "--hard", "--wait", "--wait-timeout", "180")
        looks["hard reboot"] = _looks(dom, volume["uuid"])
        for action in ("stop", "start"):
            cloud.ok("server", action, uuid, "--wait", "--wait-timeout", "180")
        looks["stop/start"] = _looks(dom, volume["uuid"])

        # Resize grows the volume; the root keeps its size.
        root = _root_disk(dom, uuid)
        assert root is not None and root.target_dev == "sda"
        grown = cloud.ok("volume", "resize", volume["uuid"], "--size", "2")
        assert dom.blockInfo("sda")[0] == root_size
        assert grown["size_gb"] == 2
        assert dom.blockInfo(attached["target_dev"])[0] == 2 * 1024**3

        # From attach on, the guest's disk settings, a name for its bus, the
        # volume's serial and alias, live and defined.
        expected = (
            "scsi",
            "sdb",
            volume["uuid"][:20],
            "ua-vol-" + volume["uuid"],
            "writeback",
            4000,
        )
        assert attached["target_dev"] == "sdb"
        assert looks == {when: [expected, expected] for when in looks}
        meta = lvxml.InstanceMetadata.from_domain_xml(dom.XMLDesc(0))
        assert meta is not None
        assert {v.id: v.target_dev for v in meta.volumes}[volume["uuid"]] == "sdb"

        # Detach takes the volume off; the root stays, live and defined.
        detached = cloud.ok("volume", "detach", uuid, volume["uuid"])
        assert (detached["status"], detached["attached_to"]) == ("available", None)
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            assert _volume_disk(dom, volume["uuid"], flags) is None
            root = _root_disk(dom, uuid, flags)
            assert root is not None and root.alias == "ua-vol-%s_root" % uuid
        assert dom.blockInfo("sda")[0] == root_size
    finally:
        if server is not None:
            cloud.ctl("server", "delete", server["uuid"], "--wait")
        if volume is not None:
            cloud.ctl("volume", "delete", volume["uuid"])
        cloud.ctl("flavor", "delete", "ft.iops")
        cloud.ctl("image", "delete", image["uuid"])


def test_a_detach_sent_while_the_guest_boots_is_sent_again_until_it_goes(
    cloud: Cloud, guest_image: dict, libvirt_conn
) -> None:
    """Issue 12, item 12: a guest still booting drops the unplug request (its
    kernel clears the pending ACPI event); the agent asks again within the timeout."""
    server = cloud.create_server("ft-vol-boot", guest_image["uuid"])
    uuid = server["uuid"]
    volume = None
    try:
        wait_for_console(cloud, uuid, "CD-GUEST ready")
        volume = cloud.ok(
            "volume", "create", "ft-boot-data", "--size", "1", "--backend", "dir", "--project", "ft"
        )
        cloud.ok("volume", "attach", uuid, volume["uuid"])
        cloud.ok("server", "stop", uuid, "--wait", "--wait-timeout", "180")
        cloud.ok("server", "start", uuid, "--wait", "--wait-timeout", "180")
        # At once: the guest is still in its firmware or early kernel.
        detached = cloud.ok("volume", "detach", uuid, volume["uuid"])
        assert (detached["status"], detached["attached_to"]) == ("available", None)
        dom = libvirt_conn.lookupByUUIDString(uuid)
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            assert _volume_disk(dom, volume["uuid"], flags) is None
        wait_for_console(cloud, uuid, "CD-GUEST ready")
    finally:
        cloud.ctl("server", "delete", uuid, "--wait")
        if volume is not None:
            cloud.ctl("volume", "delete", volume["uuid"])
