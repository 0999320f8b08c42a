"""Snapshots of real TCG guests at the driver level (LibvirtDriver + DirStorageBackend, no bus).

The proof is data on the guest's own disk. At every boot the user-data script
prints the marker found at the start of /dev/vda (``CD-TEST disk=...``) and
writes the next one (``CDMARK-<n>``): boot 1 writes 1, a snapshot is taken,
boot 2 sees 1 and writes 2, the snapshot is reverted, and boot 3 must see 1
again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import libvirt
import pytest
from cloud_env import GUEST_DIR, LIBVIRT_URI, STATE_ROOT, ensure_test_guest, remove_domains_of
from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.conf import snapshots as snapshots_conf
from compute_driver.virt import base
from compute_driver.virt.libvirt.driver import LibvirtDriver
from storage_backends.dir import DirStorageBackend

USER_DATA = b"""#!/bin/sh
m=$(dd if=/dev/vda bs=16 count=1 2>/dev/null | tr -dc 'A-Z0-9-')
echo "CD-TEST disk=${m:-none}"
n=${m#CDMARK-}
case "$n" in ''|*[!0-9]*) n=0 ;; esac
n=$((n + 1))
printf '%-16s' "CDMARK-$n" | dd of=/dev/vda bs=16 count=1 conv=notrunc,fsync 2>/dev/null
sync
echo "CD-TEST wrote=CDMARK-$n"
"""
BOOT_TIMEOUT = 60
STOP_TIMEOUT = 30


@dataclass
class Env:
    """A driver and a dir backend on qemu:///system, with their own state directory."""

    state: str
    driver: LibvirtDriver
    storage: DirStorageBackend
    image: base.ImageSpec
    servers: dict[str, str] = field(default_factory=dict)  # uuid -> volume id

    def boot(self, name: str) -> str:
        """Create and start a guest running USER_DATA; return its UUID."""
        uuid = str(uuidlib.uuid4())
        spec = base.InstanceSpec(
            uuid=uuid,
            name=name,
            project="ft",
            flavor=base.FlavorSpec("m1.nano", 1, 128, 1),
            image=self.image,
            created_at="2026-11-25T00:00:00Z",
            user_data=USER_DATA,
        )
        volume = self.storage.create_from_image(uuid + "_root", self.image, 1)
        self.servers[uuid] = volume.id
        disk = self.storage.disk_config(volume)
        disk.target_dev, disk.target_bus = "vda", "virtio"
        self.driver.spawn(spec, [disk], [], [base.VolumeRef(volume.id, "dir", "vda")])
        return uuid

    def volume_file(self, uuid: str) -> str:
        return os.path.join(self.state, "volumes", self.servers[uuid] + ".qcow2")

    def console(self, uuid: str) -> str:
        return self.driver.console_output(uuid, 2000)

    def wait_for(self, uuid: str, marker: str, timeout: float = BOOT_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.console(uuid)
            if marker in text:
                return text
            time.sleep(0.3)
        raise AssertionError("%r not on the console of %s:\n%s" % (marker, uuid, text[-2000:]))

    def disk_marker(self, uuid: str) -> str:
        """Wait for this boot's user-data; return the marker it found on /dev/vda."""
        text = self.wait_for(uuid, "CD-GUEST ready")
        found = re.findall(r"CD-TEST disk=(\S+)", text)
        assert found and "CD-TEST wrote=" in text, text[-2000:]
        return found[-1]

    def stop(self, uuid: str) -> None:
        assert self.driver.power_off(uuid, STOP_TIMEOUT, 5), "the guest ignored ACPI"

    def disk_source(self, uuid: str) -> str:
        virt_dom = self.driver.host.get_connection().lookupByUUIDString(uuid)
        domain = lvxml.Domain.parse(virt_dom.XMLDesc(0))
        (disk,) = [d for d in domain.devices_of(lvxml.Disk) if d.target_dev == "vda"]
        return disk.source_file or ""

    def snapshot_files(self) -> list[str]:
        names = os.listdir(os.path.join(self.state, "volumes"))
        return sorted(n for n in names if ".snap-" in n or ".revert-" in n)


def _backing(path: str) -> str | None:
    done = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout).get("full-backing-filename")


def _first_bytes(path: str) -> bytes:
    out = path + ".head"
    subprocess.run(
        [
            "qemu-img",
            "dd",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "bs=16",
            "count=1",
            "if=" + path,
            "of=" + out,
        ],
        check=True,
        capture_output=True,
    )
    with open(out, "rb") as f:
        head = f.read(16)
    os.unlink(out)
    return head


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("functional tests run as root (they drive qemu:///system); use `make test`")
    try:
        libvirt.open(LIBVIRT_URI).close()
    except libvirt.libvirtError as exc:
        pytest.fail("libvirtd does not answer on %s (%s)" % (LIBVIRT_URI, exc))
    manifest = ensure_test_guest()
    os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
    state = os.path.join(STATE_ROOT, "snapshots-test-" + uuidlib.uuid4().hex[:8])
    # NOTE: 0755: QEMU runs as libvirt-qemu and must reach the disks below.
    os.makedirs(state, mode=0o755)
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    snapshots_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("state_path", state)
    conf.set_override("uri", LIBVIRT_URI, group="libvirt")
    conf.set_override("virt_type", "qemu", group="libvirt")
    driver = LibvirtDriver(conf)
    driver.init_host("snapshots-test")
    image = base.ImageSpec(
        uuid=str(uuidlib.uuid4()),
        name="test-guest",
        disk_format="qcow2",
        path=os.path.join(GUEST_DIR, manifest["disk"]),
        kernel_path=os.path.join(GUEST_DIR, manifest["kernel"]),
        initrd_path=os.path.join(GUEST_DIR, manifest["initrd"]),
        cmdline=manifest["cmdline"],
    )
    environment = Env(state, driver, DirStorageBackend(conf), image)
    try:
        yield environment
    finally:
        for uuid, volume_id in environment.servers.items():
            try:
                driver.power_off(uuid, 0, 1)
                driver.snapshot_purge(uuid)
                driver.destroy(uuid)
            except exception.ComputeDriverError as exc:
                print("cleanup of %s: %s" % (uuid, exc))
            environment.storage.delete_volume(volume_id)
        remove_domains_of(state)
        shutil.rmtree(state, ignore_errors=True)


def test_internal_snapshots_bring_data_and_memory_back(env: Env) -> None:
    uuid = env.boot("snap-internal")
    assert env.disk_marker(uuid) == "none"  # boot 1 writes CDMARK-1

    # Running: disks and memory.
    live = env.driver.snapshot_create(uuid, "live", "internal", description="booted once")
    assert (live.kind, live.state, live.description) == ("internal", "running", "booted once")
    with pytest.raises(exception.InvalidSnapshot, match="quiesce needs an external"):
        env.driver.snapshot_create(uuid, "q", "internal", quiesce=True)
    env.stop(uuid)

    # Stopped: disks only.
    cold = env.driver.snapshot_create(uuid, "cold", "internal")
    assert (cold.state, cold.parent) == ("shutoff", "live")
    env.driver.power_on(uuid)
    assert env.disk_marker(uuid) == "CDMARK-1"  # boot 2 writes CDMARK-2
    env.stop(uuid)
    assert _first_bytes(env.volume_file(uuid)) == b"CDMARK-2".ljust(16)

    env.driver.snapshot_revert(uuid, "cold")
    assert env.driver.get_info(uuid).power_state == "shutdown"
    env.driver.power_on(uuid)
    assert env.disk_marker(uuid) == "CDMARK-1"  # boot 3 writes CDMARK-2 again

    env.driver.snapshot_revert(uuid, "live")
    assert env.driver.get_info(uuid).power_state == "running"
    seen = len(env.console(uuid))
    # The memory came back: the guest runs without booting again, and its
    # acpid (started after user-data) still answers the power button.
    env.stop(uuid)
    after = env.console(uuid)[seen:]
    assert "CD-GUEST acpi-poweroff" in after and "init-start" not in after
    env.driver.power_on(uuid)
    assert env.disk_marker(uuid) == "CDMARK-1"

    env.driver.snapshot_delete(uuid, "live")
    assert [(s.name, s.parent) for s in env.driver.snapshot_list(uuid)] == [("cold", None)]
    env.driver.snapshot_delete(uuid, "cold")
    assert env.driver.snapshot_list(uuid) == []
    assert env.snapshot_files() == []


def test_external_snapshots_revert_and_merge_back(env: Env) -> None:
    uuid = env.boot("snap-external")
    volume = env.volume_file(uuid)
    assert env.disk_marker(uuid) == "none"

    # Live, disk-only: the disk moves to an overlay named after the snapshot.
    with pytest.raises(exception.SnapshotConflict, match="no guest agent channel"):
        env.driver.snapshot_create(uuid, "ext1", "external", quiesce=True)
    info = env.driver.snapshot_create(uuid, "ext1", "external")
    assert (info.kind, info.state) == ("external", "disk-snapshot")
    overlay = env.disk_source(uuid)
    assert os.path.basename(overlay) == os.path.basename(volume)[:-6] + ".snap-ext1.qcow2"
    assert _backing(overlay) == volume

    env.stop(uuid)
    env.driver.power_on(uuid)
    assert env.disk_marker(uuid) == "CDMARK-1"  # writes CDMARK-2
    with pytest.raises(exception.SnapshotConflict, match="stop it first"):
        env.driver.snapshot_revert(uuid, "ext1")
    env.stop(uuid)
    assert _first_bytes(overlay) == b"CDMARK-2".ljust(16)

    env.driver.snapshot_revert(uuid, "ext1")
    fresh = env.disk_source(uuid)
    assert ".revert-ext1-" in fresh and _backing(fresh) == volume
    assert not os.path.exists(overlay), "the discarded overlay stayed"
    env.driver.power_on(uuid)
    assert env.disk_marker(uuid) == "CDMARK-1"  # writes CDMARK-2 again

    # A child taken live, deleted live: block commit into its parent's overlay.
    env.driver.snapshot_create(uuid, "ext2", "external")
    assert [(s.name, s.parent, s.children) for s in env.driver.snapshot_list(uuid)] == [
        ("ext1", None, ("ext2",)),
        ("ext2", "ext1", ()),
    ]
    with pytest.raises(exception.SnapshotConflict, match="child snapshots"):
        env.driver.snapshot_delete(uuid, "ext1")
    env.driver.snapshot_delete(uuid, "ext2")
    assert env.disk_source(uuid) == fresh
    assert [s.name for s in env.driver.snapshot_list(uuid)] == ["ext1"]

    # The last one, deleted while stopped: qemu-img commit into the volume.
    env.stop(uuid)
    env.driver.snapshot_delete(uuid, "ext1")
    assert env.disk_source(uuid) == volume
    assert env.snapshot_files() == []
    assert _first_bytes(volume) == b"CDMARK-2".ljust(16)
