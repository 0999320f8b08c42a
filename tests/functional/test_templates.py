"""Images made of stopped servers (templates), and servers from them as linked or full clones."""

from __future__ import annotations

import os
import subprocess

from cloud_env import Cloud, wait_for_console

WRITE_MARK = b"#!/bin/sh\nprintf 'CD-TEMPLATE-MARK' > /dev/vda && sync && echo CD-TEST wrote\n"
READ_MARK = b"#!/bin/sh\necho CD-TEST disk=$(head -c 16 /dev/vda)\n"


def _create(cloud: Cloud, name: str, image: str, user_data: bytes, *extra: str) -> dict:
    return cloud.create_server(name, image, *extra, user_data=user_data)


def _backing_file(cloud: Cloud, server_uuid: str) -> str | None:
    volume = os.path.join(cloud.state, "volumes", server_uuid + "_root.qcow2")
    out = subprocess.run(
        ["qemu-img", "info", "--force-share", volume], capture_output=True, text=True, check=True
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("backing file:")]
    return lines[0].split(":", 1)[1].strip() if lines else None


def test_template_from_a_stopped_server_boots_as_full_and_linked_clones(
    cloud: Cloud, guest_image: dict
) -> None:
    made: list[str] = []
    template = None
    try:
        source = _create(cloud, "ft-source", guest_image["uuid"], WRITE_MARK)
        made.append(source["uuid"])
        wait_for_console(cloud, source["uuid"], "CD-TEST wrote")
        refused = cloud.ctl("image", "create", "ft-template", "--server", source["uuid"])
        assert refused.rc == 4 and "instance_state_conflict" in refused.stderr  # still running
        cloud.ok("server", "stop", source["uuid"], "--wait")

        template = cloud.ok("image", "create", "ft-template", "--server", source["uuid"])
        assert template["disk_format"] == "qcow2" and template["kernel_path"]
        assert cloud.ok("server", "show", source["uuid"])["task_state"] is None

        full = _create(cloud, "ft-full", template["uuid"], READ_MARK, "--full-clone")
        made.append(full["uuid"])
        linked = _create(cloud, "ft-linked", template["uuid"], READ_MARK)
        made.append(linked["uuid"])
        for server in (full, linked):
            console = wait_for_console(cloud, server["uuid"], "CD-GUEST ready")
            assert "CD-TEST disk=CD-TEMPLATE-MARK" in console
        assert _backing_file(cloud, full["uuid"]) is None  # an independent copy
        assert _backing_file(cloud, linked["uuid"]) is not None  # copy-on-write over the image

        in_use = cloud.ctl("image", "delete", template["uuid"])
        assert in_use.rc == 4 and "in_use" in in_use.stderr
    finally:
        for uuid in made:
            cloud.ctl("server", "delete", uuid, "--wait")
        if template:
            cloud.ok("image", "delete", template["uuid"])
