"""Quiesced snapshots through a real QEMU guest agent (LibvirtDriver + DirStorageBackend, no bus).

The test guest (build 2 of tools/build-test-guest.sh) mounts the ext4 file
system of its disk at /data and runs qemu-ga when the domain has the agent
channel (image property ``hw_qemu_guest_agent``). At boot the user-data
script turns off the kernel's periodic writeback, writes a proof file to
/data without syncing it, and keeps appending a heartbeat to /data.

The proof is in the snapshot's state file: a quiesced snapshot froze the
file system, so the proof is on disk there; a snapshot without the agent
is crash-consistent, and the proof, still in the guest's page cache, is not.
Heartbeats on the console after the snapshot show that the guest was thawed
(writes to a frozen file system block).
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
from cloud_env import GUEST_DIR, LIBVIRT_URI, REPO, STATE_ROOT, fast_console, remove_domains_of
from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.conf import snapshots as snapshots_conf
from compute_driver.virt import base
from compute_driver.virt.libvirt import snapshots
from compute_driver.virt.libvirt.driver import LibvirtDriver
from storage_backends.dir import DirStorageBackend

#: The build of the test guest that has qemu-ga and /data.
GUEST_BUILD = 2
USER_DATA = """#!/bin/sh
# Dirty data stays in the page cache until something syncs it.
echo 0 > /proc/sys/vm/dirty_writeback_centisecs
echo 360000 > /proc/sys/vm/dirty_expire_centisecs
echo "{token}" > /data/proof
echo "CD-TEST proof written"
(i=0; while :; do i=$((i + 1)); echo "$i" >> /data/beat; echo "CD-TEST beat $i"; sleep 1; done) \\
    </dev/null >/dev/console 2>&1 &
"""
BOOT_TIMEOUT = 90
STOP_TIMEOUT = 30


@dataclass
class Env:
    """A driver and a dir backend on qemu:///system, with their own state directory."""

    state: str
    driver: LibvirtDriver
    storage: DirStorageBackend
    manifest: dict[str, str]
    servers: dict[str, str] = field(default_factory=dict)  # uuid -> volume id
    tokens: dict[str, str] = field(default_factory=dict)  # uuid -> proof written at boot

    def image(self, properties: dict[str, str]) -> base.ImageSpec:
        return base.ImageSpec(
            uuid=str(uuidlib.uuid4()),
            name="test-guest",
            disk_format="qcow2",
            path=os.path.join(GUEST_DIR, self.manifest["disk"]),
            kernel_path=os.path.join(GUEST_DIR, self.manifest["kernel"]),
            initrd_path=os.path.join(GUEST_DIR, self.manifest["initrd"]),
            cmdline=self.manifest["cmdline"],
            properties=properties,
        )

    def boot(self, name: str, properties: dict[str, str]) -> str:
        """Create and start a 1-vCPU guest running USER_DATA; return its UUID."""
        uuid = str(uuidlib.uuid4())
        token = "CD-QUIESCE-PROOF-" + uuidlib.uuid4().hex
        image = self.image(properties)
        spec = base.InstanceSpec(
            uuid=uuid,
            name=name,
            project="ft",
            flavor=base.FlavorSpec("m1.nano", 1, 128, 1),
            image=image,
            created_at="2026-11-25T00:00:00Z",
            user_data=USER_DATA.format(token=token).encode(),
        )
        volume = self.storage.create_from_image(uuid + "_root", image, 1)
        self.servers[uuid] = volume.id
        self.tokens[uuid] = token
        disk = self.storage.disk_config(volume)
        disk.target_dev, disk.target_bus = "vda", "virtio"
        self.driver.spawn(spec, [disk], [], [base.VolumeRef(volume.id, "dir", "vda")])
        return uuid

    def domain(self, uuid: str) -> libvirt.virDomain:
        return self.driver.host.get_connection().lookupByUUIDString(uuid)

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

    def last_beat(self, uuid: str) -> int:
        beats = re.findall(r"CD-TEST beat (\d+)", self.console(uuid))
        return int(beats[-1]) if beats else 0

    def wait_for_beat_after(self, uuid: str, beat: int, timeout: float = 30) -> int:
        """Wait until the heartbeat passes ``beat`` (the guest writes to /data again)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.last_beat(uuid)
            if now > beat:
                return now
            time.sleep(0.5)
        raise AssertionError(
            "no heartbeat after %d within %d s: is /data still frozen?\n%s"
            % (beat, timeout, self.console(uuid)[-2000:])
        )

    def wait_for_agent(self, uuid: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if snapshots.agent_state(self.domain(uuid).XMLDesc(0)) == snapshots.AGENT_CONNECTED:
                return
            time.sleep(0.3)
        raise AssertionError("libvirt never saw the guest agent of %s connect" % uuid)

    def disk_source(self, uuid: str) -> str:
        domain = lvxml.Domain.parse(self.domain(uuid).XMLDesc(0))
        (disk,) = [d for d in domain.devices_of(lvxml.Disk) if d.target_dev == "vda"]
        return disk.source_file or ""

    def snapshot_files(self) -> list[str]:
        names = os.listdir(os.path.join(self.state, "volumes"))
        return sorted(n for n in names if ".snap-" in n or ".revert-" in n)

    def read_data_file(self, qcow2: str, path: str) -> str:
        """``path`` of the ext4 on ``qcow2`` (and its backing chain), as the disk holds it.

        debugfs reads the file system as it is on disk: what a journal holds
        but has not written back does not count, just as for a copy of the
        disk taken without the guest's help.
        """
        raw = os.path.join(self.state, "read-%s.raw" % uuidlib.uuid4().hex[:8])
        try:
            subprocess.run(
                ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", qcow2, raw],
                check=True,
                capture_output=True,
                timeout=120,
            )
            done = subprocess.run(
                ["debugfs", "-R", "cat " + path, raw],
                capture_output=True,
                text=True,
                timeout=60,
            )
            return done.stdout
        finally:
            if os.path.exists(raw):
                os.unlink(raw)


def _build_guest() -> dict[str, str]:
    """Bring GUEST_DIR to this build (the script does nothing if it is already there)."""
    subprocess.run(
        ["bash", os.path.join(REPO, "tools", "build-test-guest.sh"), GUEST_DIR],
        check=True,
        capture_output=True,
        timeout=900,
    )
    with open(os.path.join(GUEST_DIR, "guest.json")) as f:
        manifest: dict[str, str] = json.load(f)
    assert int(manifest.get("build", 1)) >= GUEST_BUILD, manifest
    manifest["cmdline"] = fast_console(manifest["cmdline"])
    return manifest


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("functional tests run as root (they drive qemu:///system); use `make test`")
    try:
        libvirt.open(LIBVIRT_URI).close()
    except libvirt.libvirtError as exc:
        pytest.fail("libvirtd does not answer on %s (%s)" % (LIBVIRT_URI, exc))
    if shutil.which("debugfs") is None:
        pytest.fail("debugfs (e2fsprogs) is needed to read the snapshots' file systems")
    manifest = _build_guest()
    os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
    state = os.path.join(STATE_ROOT, "quiesce-test-" + uuidlib.uuid4().hex[:8])
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
    driver.init_host("quiesce-test")
    environment = Env(state, driver, DirStorageBackend(conf), manifest)
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


@pytest.fixture(scope="module")
def servers(env: Env) -> dict[str, str]:
    """Both guests, booted together: ``agent`` (with the channel) and ``plain``."""
    booted = {
        "agent": env.boot("quiesce-agent", {"hw_qemu_guest_agent": "yes"}),
        "plain": env.boot("quiesce-plain", {}),
    }
    for uuid in booted.values():
        text = env.wait_for(uuid, "CD-TEST beat 1")
        assert "CD-GUEST data dev=" in text and "CD-TEST proof written" in text, text[-2000:]
    return booted


def _quiesced(env: Env, uuid: str) -> dict[str, bool]:
    """``{snapshot name: quiesced}`` as the driver lists them."""
    return {s.name: s.quiesced for s in env.driver.snapshot_list(uuid)}


def test_snapshot_with_the_agent_is_quiesced(env: Env, servers: dict[str, str]) -> None:
    uuid = servers["agent"]
    assert "CD-GUEST qga started" in env.console(uuid)
    env.wait_for_agent(uuid)
    virt_dom = env.domain(uuid)
    # The agent answers (guest-get-fsinfo) and sees the file system it will freeze.
    assert "/data" in [fs[0] for fs in virt_dom.fsInfo(0)]
    volume = env.volume_file(uuid)
    token = env.tokens[uuid]

    beat = env.last_beat(uuid)
    info = env.driver.snapshot_create(uuid, "q1", "external", description="quiesced")
    assert (info.kind, info.state) == ("external", "disk-snapshot")
    assert _quiesced(env, uuid) == {"q1": True}
    # The freeze wrote the guest's dirty data to the disk the snapshot froze.
    assert env.disk_source(uuid).endswith(".snap-q1.qcow2")
    assert env.read_data_file(volume, "/proof").strip() == token
    env.wait_for_beat_after(uuid, beat)  # thawed

    # Asked for explicitly (strict), with the agent there: also quiesced.
    env.driver.snapshot_create(uuid, "q2", "external", quiesce=True)
    assert _quiesced(env, uuid) == {"q1": True, "q2": True}
    env.wait_for_beat_after(uuid, env.last_beat(uuid))

    # Deleting drops the records with the snapshots (live merges).
    env.driver.snapshot_delete(uuid, "q2")
    env.driver.snapshot_delete(uuid, "q1")
    assert _quiesced(env, uuid) == {}
    assert (
        snapshots.quiesced_from_xml(
            virt_dom.metadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, snapshots.QUIESCE_METADATA_NAMESPACE, 0
            )
        )
        == {}
    )
    assert env.snapshot_files() == [] and env.disk_source(uuid) == volume


def test_snapshot_without_the_agent_is_not_quiesced(env: Env, servers: dict[str, str]) -> None:
    uuid = servers["plain"]
    text = env.console(uuid)
    assert "CD-GUEST qga started" not in text
    virt_dom = env.domain(uuid)
    assert snapshots.agent_state(virt_dom.XMLDesc(0)) == snapshots.AGENT_ABSENT
    volume = env.volume_file(uuid)
    # NOTE: a SnapshotManager of the test's own (the driver's public snapshot
    # code), because no driver call can say "the image requires quiesce" of a
    # server booted from an image that does not.
    manager = snapshots.SnapshotManager(max_per_instance=10)

    # The image requires quiesce: refused, and nothing changed.
    with pytest.raises(exception.SnapshotConflict, match="no guest agent channel") as caught:
        manager.create(virt_dom, uuid, "must", "external", require_quiesce=True)
    assert "os_require_quiesce" in str(caught.value)
    assert env.driver.snapshot_list(uuid) == []
    assert env.disk_source(uuid) == volume and env.snapshot_files() == []

    info = env.driver.snapshot_create(uuid, "plain1", "external")
    assert info.kind == "external"
    assert _quiesced(env, uuid) == {"plain1": False}
    # Crash-consistent: the proof never left the guest's page cache.
    assert env.tokens[uuid] not in env.read_data_file(volume, "/proof")
    env.wait_for_beat_after(uuid, env.last_beat(uuid))
    env.driver.snapshot_delete(uuid, "plain1")
    assert env.snapshot_files() == []
