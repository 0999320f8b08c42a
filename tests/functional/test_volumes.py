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
from cloud_env import Cloud, wait_for_console

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
