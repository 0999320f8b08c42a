"""Server snapshots: names, limits, the <domainsnapshot> builder, disk plans, file rules,
and the driver API on libvirt's in-process test driver (internal snapshots only there)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid as uuidlib
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree
from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.conf import snapshots as snapshots_conf
from compute_driver.domain_xml.base import XMLBuilder, XMLBuilderError
from compute_driver.domain_xml.snapshot import DomainSnapshot, SnapshotDisk
from compute_driver.virt import base
from compute_driver.virt.libvirt import snapshots
from compute_driver.virt.libvirt.driver import LibvirtDriver

# NOTE: regenerate after a deliberate change with UPDATE_GOLDEN=1, then review the diff.
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
GOLDEN_DIR = Path(__file__).parent / "snapshot-golden"
VOLUMES = "/var/lib/compute-driver/volumes"
INSTANCE = "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10"


# --- names and options -----------------------------------------------------


@pytest.mark.parametrize("name", ["a", "before-upgrade", "v1.2_rc3", "9", "x" * 64])
def test_good_names_pass(name: str) -> None:
    assert snapshots.check_name(INSTANCE, name) == name


@pytest.mark.parametrize(
    "name",
    ["", "x" * 65, "a/b", "..", "a..b", ".hidden", "-x", "_x", "a b", "snäp", "a\n", None, 5],
)
def test_bad_names_are_refused(name: Any) -> None:
    with pytest.raises(exception.InvalidSnapshot, match="letters, digits") as caught:
        snapshots.check_name(INSTANCE, name)
    assert caught.value.code == "invalid_instance_snapshot"


def test_max_snapshots_option_defaults_to_10_and_needs_at_least_1() -> None:
    conf = cfg.ConfigOpts()
    snapshots_conf.register_opts(conf)
    conf([], default_config_files=[])
    assert conf.snapshots.max_snapshots_per_instance == 10
    with pytest.raises(ValueError):
        conf.set_override("max_snapshots_per_instance", 0, group="snapshots")
    assert [opt.name for opt in snapshots_conf.list_opts()[snapshots_conf.GROUP]] == [
        "max_concurrent_snapshots",
        "max_snapshots_per_instance",
    ]


# --- the <domainsnapshot> builder ------------------------------------------


def _internal_request() -> DomainSnapshot:
    """What create sends for a running server: memory and disk inside the qcow2."""
    return DomainSnapshot(
        name="before-upgrade",
        description="kernel 6.1 still boots",
        memory="internal",
        disks=[
            SnapshotDisk(name="vda", snapshot="internal"),
            SnapshotDisk(name="hdc", snapshot="no"),
        ],
    )


def _external_request() -> DomainSnapshot:
    """What create sends for an external snapshot: one overlay per disk."""
    return DomainSnapshot(
        name="ext1",
        disks=[
            SnapshotDisk(
                name="vda",
                snapshot="external",
                type="file",
                driver_type="qcow2",
                source_file=f"{VOLUMES}/{INSTANCE}_root.snap-ext1.qcow2",
            ),
            SnapshotDisk(name="hdc", snapshot="no"),
        ],
    )


def _libvirt_answer() -> DomainSnapshot:
    """What libvirt returns for it: state, parent, time, and the domain as it was."""
    domain = lvxml.Domain(
        type="qemu",
        name="cd-" + INSTANCE,
        uuid=INSTANCE,
        memory_kib=131072,
        vcpus=1,
        os=lvxml.OS(type="hvm", arch="x86_64", machine="pc"),
        devices=[
            lvxml.Disk(
                type="file",
                device="disk",
                driver_name="qemu",
                driver_type="qcow2",
                source_file=f"{VOLUMES}/{INSTANCE}_root.qcow2",
                target_dev="vda",
                target_bus="virtio",
            )
        ],
    )
    answer = _external_request()
    answer.state = "disk-snapshot"
    answer.parent = "ext0"
    answer.creation_time = 1795641454
    answer.memory = "no"
    answer.domain = domain
    return answer


GOLDEN = {
    "internal-request": _internal_request,
    "external-request": _external_request,
    "libvirt-answer": _libvirt_answer,
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_serializes_to_golden_and_parses_back_equal(name: str) -> None:
    snap = GOLDEN[name]()
    path = GOLDEN_DIR / f"{name}.xml"
    text = snap.to_string()
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"{name}: output differs from {path.name}"
    parsed = DomainSnapshot.parse(text)
    assert parsed == snap
    assert parsed.to_string() == text


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_passes_virt_xml_validate(name: str) -> None:
    assert shutil.which("virt-xml-validate"), "virt-xml-validate (libvirt-clients) is required"
    done = subprocess.run(
        ["virt-xml-validate", str(GOLDEN_DIR / f"{name}.xml"), "domainsnapshot"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_stale_golden_files() -> None:
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.xml")) == sorted(GOLDEN)


def test_every_declared_snapshot_property_is_exercised() -> None:
    declared = {(m.owner, m.name) for cls in (DomainSnapshot, SnapshotDisk) for m in cls.members()}
    used = {
        (m.owner, m.name)
        for make in GOLDEN.values()
        for builder in make().walk()
        if isinstance(builder, (DomainSnapshot, SnapshotDisk))
        for m in builder.members()
        if m.name in builder.non_default()
    }
    assert not declared - used, f"never exercised by a golden: {sorted(declared - used)}"


def test_libvirt_answer_tells_kind_and_state_files() -> None:
    answer = DomainSnapshot.parse(_libvirt_answer().to_string())
    assert answer.kind == "external" and _internal_request().kind == "internal"
    assert answer.disk_modes() == {"vda": "external", "hdc": "no"}
    assert snapshots.state_files(answer) == {"vda": f"{VOLUMES}/{INSTANCE}_root.qcow2"}
    assert snapshots.snapshot_files(answer) == {
        f"{VOLUMES}/{INSTANCE}_root.qcow2",
        f"{VOLUMES}/{INSTANCE}_root.snap-ext1.qcow2",
    }


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: SnapshotDisk(name="vda", snapshot="internal", source_file="/x"), "need snapshot"),
        (
            lambda: SnapshotDisk(name="vda", snapshot="external", source_file="rel.qcow2"),
            "not an absolute path",
        ),
        (
            lambda: DomainSnapshot(disks=[SnapshotDisk(name="vda"), SnapshotDisk(name="vda")]),
            "named twice",
        ),
        (lambda: DomainSnapshot(disks=[SnapshotDisk(snapshot="no")]), "name is required"),
    ],
)
def test_inconsistent_snapshots_are_not_written(build: Any, match: str) -> None:
    with pytest.raises(XMLBuilderError, match=match):
        build().to_string()


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (SnapshotDisk, dict(snapshot="manual"), r"SnapshotDisk\.snapshot"),
        (SnapshotDisk, dict(type="block"), r"SnapshotDisk\.type"),
        (DomainSnapshot, dict(memory="external"), r"DomainSnapshot\.memory"),
        (DomainSnapshot, dict(state="gone"), r"DomainSnapshot\.state"),
        (DomainSnapshot, dict(creation_time=-1), r"less than 0"),
    ],
)
def test_constructor_rejects_invalid_values(cls: type, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(XMLBuilderError, match=match):
        cls(**kwargs)


# --- disk plans and file rules ---------------------------------------------


def _disk(dev: str, **kwargs: Any) -> lvxml.Disk:
    values: dict[str, Any] = dict(
        type="file",
        device="disk",
        driver_type="qcow2",
        source_file=f"{VOLUMES}/{dev}.qcow2",
        target_dev=dev,
    )
    values.update(kwargs)
    return lvxml.Disk(**values)


def _domain(*disks: XMLBuilder) -> lvxml.Domain:
    return lvxml.Domain(
        type="qemu", name="cd-t", memory_kib=65536, vcpus=1, os=lvxml.OS(type="hvm"), devices=disks
    )


def test_plan_excludes_cdroms_and_readonly_disks() -> None:
    domain = _domain(
        _disk("vda"),
        _disk("vdb", source_file=f"{VOLUMES}/vol-2.snap-old.qcow2"),
        _disk("vdc", readonly=True),
        _disk("hdc", device="cdrom", driver_type="raw", source_file="/i/config.iso"),
    )
    internal = snapshots.plan_disks(INSTANCE, "s1", "internal", domain)
    assert [(d.name, d.snapshot) for d in internal] == [
        ("vda", "internal"),
        ("vdb", "internal"),
        ("vdc", "no"),
        ("hdc", "no"),
    ]
    external = snapshots.plan_disks(INSTANCE, "s1", "external", domain)
    assert [(d.name, d.snapshot, d.source_file) for d in external] == [
        ("vda", "external", f"{VOLUMES}/vda.snap-s1.qcow2"),
        # named after the volume, not after the overlay the disk is on now
        ("vdb", "external", f"{VOLUMES}/vol-2.snap-s1.qcow2"),
        ("vdc", "no", None),
        ("hdc", "no", None),
    ]


@pytest.mark.parametrize(
    ("disk", "match"),
    [
        (_disk("vdb", type="network", source_file=None, source_protocol="rbd"), "network/qcow2"),
        (_disk("vdb", driver_type="raw"), "file/raw"),
        (_disk("vdb", shareable=True), "shareable"),
    ],
)
def test_plan_refuses_disks_it_cannot_snapshot(disk: lvxml.Disk, match: str) -> None:
    with pytest.raises(exception.SnapshotConflict, match=match):
        snapshots.plan_disks(INSTANCE, "s1", "internal", _domain(_disk("vda"), disk))


def test_plan_needs_a_disk() -> None:
    cdrom = _disk("hdc", device="cdrom", driver_type="raw")
    with pytest.raises(exception.SnapshotConflict, match="no disk to snapshot"):
        snapshots.plan_disks(INSTANCE, "s1", "internal", _domain(cdrom))


def test_garbage_is_only_our_overlays_that_nothing_keeps() -> None:
    homes = {(VOLUMES, "vol")}
    candidates = {
        f"{VOLUMES}/vol.qcow2",  # the volume itself: never
        f"{VOLUMES}/vol.snap-a.qcow2",
        f"{VOLUMES}/vol.snap-b.qcow2",
        f"{VOLUMES}/vol.revert-a-0f0f0f0f.qcow2",
        f"{VOLUMES}/other.snap-a.qcow2",  # another volume's
        "/elsewhere/vol.snap-a.qcow2",  # another directory
        "/var/lib/compute-driver/image-cache/img",
    }
    keep = {f"{VOLUMES}/vol.snap-b.qcow2"}
    assert snapshots.garbage(candidates, keep, homes) == [
        f"{VOLUMES}/vol.revert-a-0f0f0f0f.qcow2",
        f"{VOLUMES}/vol.snap-a.qcow2",
    ]


def test_overlay_names_follow_the_volume() -> None:
    assert snapshots.stem_of(f"{VOLUMES}/vol_root.snap-a.b.qcow2") == "vol_root"
    assert (
        snapshots.overlay_path(f"{VOLUMES}/vol.qcow2", "v1.2") == f"{VOLUMES}/vol.snap-v1.2.qcow2"
    )
    fresh = snapshots.revert_overlay_path(f"{VOLUMES}/vol.snap-a.qcow2", "a")
    assert fresh.startswith(f"{VOLUMES}/vol.revert-a-") and fresh.endswith(".qcow2")
    assert fresh != snapshots.revert_overlay_path(f"{VOLUMES}/vol.snap-a.qcow2", "a")


def test_redefinition_changes_only_the_disk_source() -> None:
    xml = """<domain type='qemu'><name>cd-t</name><devices>
      <disk type='file' device='disk'><source file='/v/vol.snap-a.qcow2'/>
        <backingStore type='file'><source file='/v/vol.qcow2'/></backingStore>
        <target dev='vda' bus='virtio'/><address type='pci' slot='0x04'/></disk>
      <disk type='file' device='cdrom'><source file='/i/config.iso'/><target dev='hdc'/></disk>
      <controller type='usb' index='0'/></devices></domain>"""
    root = etree.fromstring(snapshots.with_disk_sources(xml, {"vda": "/v/vol.qcow2"}))
    vda, hdc = root.findall("./devices/disk")
    assert vda.find("source").get("file") == "/v/vol.qcow2"
    assert vda.find("backingStore") is None and vda.find("address") is not None
    assert hdc.find("source").get("file") == "/i/config.iso"
    assert root.find("./devices/controller") is not None


def test_created_at_is_iso_utc() -> None:
    assert snapshots.created_at(1795641454) == "2026-11-25T21:17:34Z"


# --- the driver on libvirt's test driver -----------------------------------


@pytest.fixture
def driver(tmp_path: Path) -> LibvirtDriver:
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    snapshots_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("state_path", str(tmp_path))
    conf.set_override("uri", "test:///default", group="libvirt")
    conf.set_override("max_snapshots_per_instance", 3, group="snapshots")
    drv = LibvirtDriver(conf)
    drv.init_host("unit")
    return drv


@pytest.fixture
def server(driver: LibvirtDriver, tmp_path: Path) -> Any:
    uuid = str(uuidlib.uuid4())
    spec = base.InstanceSpec(
        uuid=uuid,
        name="snap",
        project="p",
        flavor=base.FlavorSpec("m1.tiny", 1, 128, 1),
        image=base.ImageSpec(uuid=str(uuidlib.uuid4()), name="i", disk_format="raw", path="/i"),
        created_at="2026-11-25T00:00:00Z",
    )
    disk = _disk("vda", source_file=str(tmp_path / f"{uuid}_root.qcow2"), target_bus="virtio")
    driver.spawn(spec, [disk], [], [base.VolumeRef(uuid + "_root", "dir", "vda")])
    yield uuid
    driver.power_off(uuid, 0, 1)
    driver.snapshot_purge(uuid)
    driver.destroy(uuid)


def _tree(driver: LibvirtDriver, uuid: str) -> list[tuple[str, str | None, tuple[str, ...]]]:
    return [(s.name, s.parent, s.children) for s in driver.snapshot_list(uuid)]


def test_create_list_revert_delete_keep_the_tree(driver: LibvirtDriver, server: str) -> None:
    first = driver.snapshot_create(server, "a", "internal", description="clean")
    assert first == base.SnapshotInfo(
        name="a",
        kind="internal",
        created_at=first.created_at,
        parent=None,
        children=(),
        state="running",
        description="clean",
    )
    driver.snapshot_create(server, "b", "internal")
    driver.snapshot_revert(server, "a")
    driver.snapshot_create(server, "c", "internal")
    assert _tree(driver, server) == [("a", None, ("b", "c")), ("b", "a", ()), ("c", "a", ())]
    driver.snapshot_delete(server, "a")  # internal: children move up
    assert _tree(driver, server) == [("b", None, ()), ("c", None, ())]


def test_limit_duplicates_and_unknown_names(driver: LibvirtDriver, server: str) -> None:
    for name in ("a", "b", "c"):
        driver.snapshot_create(server, name, "internal")
    with pytest.raises(exception.SnapshotExists):
        driver.snapshot_create(server, "a", "internal")
    with pytest.raises(exception.SnapshotLimitReached, match="already has 3 snapshots"):
        driver.snapshot_create(server, "d", "internal")
    driver.snapshot_delete(server, "b")
    driver.snapshot_create(server, "d", "internal")
    for call in (driver.snapshot_revert, driver.snapshot_delete):
        with pytest.raises(exception.SnapshotNotFound, match="no snapshot named zz"):
            call(server, "zz")
    with pytest.raises(exception.InstanceNotFound):
        driver.snapshot_list(str(uuidlib.uuid4()))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(name="a/b", kind="internal"), exception.InvalidSnapshot, "letters, digits"),
        (dict(name="a", kind="full"), exception.InvalidSnapshot, "not internal or external"),
        (dict(name="a", kind="internal", quiesce=True), exception.InvalidSnapshot, "external"),
        (
            dict(name="a", kind="internal", description="x\x00"),
            exception.InvalidSnapshot,
            "control",
        ),
        (dict(name="a", kind="internal", description="x" * 256), exception.InvalidSnapshot, "255"),
        (
            dict(name="a", kind="external", quiesce=True),
            exception.SnapshotConflict,
            "no guest agent channel",
        ),
    ],
)
def test_bad_requests_are_refused_before_libvirt(
    driver: LibvirtDriver, server: str, kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        driver.snapshot_create(server, **kwargs)
    assert driver.snapshot_list(server) == []


def test_one_kind_per_server_and_nothing_on_a_suspended_one(
    driver: LibvirtDriver, server: str
) -> None:
    driver.snapshot_create(server, "a", "internal")
    with pytest.raises(exception.SnapshotConflict, match="has internal snapshots"):
        driver.snapshot_create(server, "b", "external")
    driver.suspend(server)
    for call, args in (
        (driver.snapshot_create, ("b", "internal")),
        (driver.snapshot_revert, ("a",)),
        (driver.snapshot_delete, ("a",)),
    ):
        with pytest.raises(exception.SnapshotConflict, match="suspended"):
            call(server, *args)
    driver.power_on(server)


def test_quiesce_of_a_stopped_server_is_refused(driver: LibvirtDriver, server: str) -> None:
    driver.power_off(server, 0, 1)
    with pytest.raises(exception.SnapshotConflict, match="needs a running server"):
        driver.snapshot_create(server, "a", "external", quiesce=True)


class _FailingDomain:
    """A running domain whose snapshotCreateXML makes the overlay, then fails."""

    def __init__(self, xml: str) -> None:
        self.xml = xml

    def isActive(self) -> bool:
        return True

    def hasManagedSaveImage(self, flags: int) -> bool:
        return False

    def listAllSnapshots(self, flags: int) -> list:
        return []

    def XMLDesc(self, flags: int) -> str:
        return self.xml

    def snapshotCreateXML(self, xml: str, flags: int) -> None:
        assert flags & libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        assert flags & libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        for disk in DomainSnapshot.parse(xml).disks:
            if disk.source_file:
                Path(disk.source_file).write_bytes(b"half made")
        raise libvirt.libvirtError("QEMU said no")


def test_failed_external_create_leaves_no_overlay(tmp_path: Path) -> None:
    domain = _domain(_disk("vda", source_file=str(tmp_path / "vol.qcow2")))
    manager = snapshots.SnapshotManager(max_per_instance=5)
    with pytest.raises(exception.VirtError, match="snapshot_create"):
        manager.create(_FailingDomain(domain.to_string()), INSTANCE, "s1", "external")
    assert list(tmp_path.iterdir()) == []
