"""Power actions on one real TCG guest: each through the bus, each checked in libvirt."""

from __future__ import annotations

import libvirt
from cloud_env import Cloud, wait_for_console


def _state(conn: libvirt.virConnect, uuid: str) -> int:
    return conn.lookupByUUIDString(uuid).state()[0]


def _act(cloud: Cloud, action: str, server: str, *extra: str) -> dict:
    return cloud.ok("server", action, server, *extra, "--wait", "--wait-timeout", "180")


def test_power_actions_on_a_real_guest(cloud: Cloud, guest_image: dict, libvirt_conn) -> None:
    server = cloud.create_server("ft-actions", guest_image["uuid"])
    uuid = server["uuid"]
    try:
        wait_for_console(cloud, uuid, "CD-GUEST ready")

        diagnostics = cloud.ok("server", "diagnostics", uuid)
        assert diagnostics["power_state"] == "running" and diagnostics["cpu.time"] > 0
        assert diagnostics["block.0.name"] == "vda"

        record = _act(cloud, "pause", uuid)
        assert (record["vm_state"], record["power_state"]) == ("paused", "paused")
        assert _state(libvirt_conn, uuid) == libvirt.VIR_DOMAIN_PAUSED
        # Not allowed while paused: a clear conflict (exit 4), nothing changes.
        refused = cloud.ctl("server", "suspend", uuid)
        assert refused.rc == 4 and "instance_state_conflict" in refused.stderr
        record = _act(cloud, "unpause", uuid)
        assert (record["vm_state"], record["power_state"]) == ("active", "running")

        # A clean stop: the guest hears ACPI and powers itself off.
        record = _act(cloud, "stop", uuid)
        assert (record["vm_state"], record["power_state"]) == ("stopped", "shutdown")
        assert record["fault"] is None
        assert "CD-GUEST acpi-poweroff" in cloud.ok("server", "console-log", uuid, "--lines", "50")

        record = _act(cloud, "start", uuid)
        assert (record["vm_state"], record["power_state"]) == ("active", "running")
        wait_for_console(cloud, uuid, "CD-GUEST ready")

        # Soft reboot goes through ACPI: the guest logs its power-off, then boots again.
        record = _act(cloud, "reboot", uuid)
        assert record["vm_state"] == "active" and record["fault"] is None
        console = wait_for_console(cloud, uuid, "CD-GUEST ready")
        assert "CD-GUEST cidata instance-id=%s" % uuid in console

        # Drift the definition behind our back; a hard reboot writes it afresh.
        drifted = libvirt_conn.lookupByUUIDString(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        drifted = drifted.replace("<title>ft-actions</title>", "<title>tampered</title>")
        libvirt_conn.defineXML(drifted)
        record = _act(cloud, "reboot", uuid, "--hard")
        assert (record["vm_state"], record["power_state"]) == ("active", "running")
        dom = libvirt_conn.lookupByUUIDString(uuid)
        assert "<title>ft-actions</title>" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        wait_for_console(cloud, uuid, "CD-GUEST ready")

        # Suspend writes a managed-save image; resume restores the same guest.
        record = _act(cloud, "suspend", uuid)
        assert (record["vm_state"], record["power_state"]) == ("suspended", "suspended")
        dom = libvirt_conn.lookupByUUIDString(uuid)
        assert not dom.isActive() and dom.hasManagedSaveImage()
        record = _act(cloud, "resume", uuid)
        assert (record["vm_state"], record["power_state"]) == ("active", "running")
        assert not dom.hasManagedSaveImage()

        # Starting a running server is refused, not queued.
        refused = cloud.ctl("server", "start", uuid)
        assert refused.rc == 4 and "needs the server to be stopped" in refused.stderr
    finally:
        cloud.ok("server", "delete", uuid, "--wait")


def test_guest_powering_itself_off_is_seen_through_events(
    cloud: Cloud, guest_image: dict, libvirt_conn
) -> None:
    import time

    server = cloud.create_server("ft-events", guest_image["uuid"])
    uuid = server["uuid"]
    try:
        wait_for_console(cloud, uuid, "CD-GUEST ready")
        # Behind our back, as an operator with virsh would: the guest hears ACPI and powers off.
        libvirt_conn.lookupByUUIDString(uuid).shutdown()
        deadline = time.monotonic() + 30
        record = server
        while time.monotonic() < deadline:
            record = cloud.ok("server", "show", uuid)
            if record["vm_state"] == "stopped":
                break
            time.sleep(0.5)
        assert (record["vm_state"], record["power_state"]) == ("stopped", "shutdown")
        assert record["task_state"] is None
    finally:
        cloud.ok("server", "delete", uuid, "--wait")


def test_snapshots_through_the_bus(cloud: Cloud, guest_image: dict, libvirt_conn) -> None:
    server = cloud.create_server("ft-snap", guest_image["uuid"])
    uuid = server["uuid"]
    try:
        wait_for_console(cloud, uuid, "CD-GUEST ready")
        record = cloud.ok(
            "server",
            "snapshot",
            "create",
            uuid,
            "first",
            "--description",
            "while running",
            "--wait",
        )
        assert record["vm_state"] == "active" and record["fault"] is None
        cloud.ok("server", "stop", uuid, "--wait")
        cloud.ok("server", "snapshot", "create", uuid, "second", "--wait")
        snaps = {s["name"]: s for s in cloud.ok("server", "snapshot", "list", uuid)}
        assert snaps["first"]["children"] == ["second"] and snaps["second"]["parent"] == "first"
        assert snaps["first"]["state"] == "running" and snaps["second"]["state"] == "shutoff"

        # A bad name is refused before anything happens; a missing one fails with a reason.
        bad = cloud.ctl("server", "snapshot", "create", uuid, "../etc")
        assert bad.rc == 2 and "invalid_payload" in bad.stderr
        missing = cloud.ctl("server", "snapshot", "revert", uuid, "nosuch", "--wait")
        assert missing.rc == 1 and "action_failed" in missing.stderr and "nosuch" in missing.stderr

        # Reverting to a snapshot of a running guest brings it back running.
        record = cloud.ok("server", "snapshot", "revert", uuid, "first", "--wait")
        assert (record["vm_state"], record["power_state"]) == ("active", "running")
        assert libvirt_conn.lookupByUUIDString(uuid).isActive()
        cloud.ok("server", "snapshot", "delete", uuid, "second", "--wait")
        assert [s["name"] for s in cloud.ok("server", "snapshot", "list", uuid)] == ["first"]
    finally:
        # Delete copes with a server that still has snapshots.
        cloud.ok("server", "delete", uuid, "--wait")
