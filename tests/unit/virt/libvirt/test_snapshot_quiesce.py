"""Quiesce of server snapshots: when the guest agent is asked to freeze, when a snapshot is
refused, the fallback without it, the thaw, and the record of what was quiesced."""

from __future__ import annotations

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
from compute_driver.domain_xml.snapshot import DomainSnapshot, SnapshotDisk
from compute_driver.virt import base
from compute_driver.virt.libvirt import snapshots
from compute_driver.virt.libvirt.driver import LibvirtDriver
from compute_driver.virt.libvirt.snapshots import QuiescePlan

INSTANCE = "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10"
QUIESCE = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
CONNECTED, DISCONNECTED, ABSENT = (
    snapshots.AGENT_CONNECTED,
    snapshots.AGENT_DISCONNECTED,
    snapshots.AGENT_ABSENT,
)


def _domain_xml(volume: str, agent: str) -> str:
    """A running domain's XML with one qcow2 disk and the agent channel in state ``agent``."""
    devices: list[Any] = [
        lvxml.Disk(
            type="file",
            device="disk",
            driver_type="qcow2",
            source_file=volume,
            target_dev="vda",
            target_bus="virtio",
        )
    ]
    if agent != ABSENT:
        devices.append(
            lvxml.Channel(type="unix", target_type="virtio", target_name=snapshots.AGENT_CHANNEL)
        )
    domain = lvxml.Domain(
        type="qemu",
        name="cd-t",
        memory_kib=65536,
        vcpus=1,
        os=lvxml.OS(type="hvm"),
        devices=devices,
    )
    root = etree.fromstring(domain.to_string())
    if agent == CONNECTED:
        root.find("./devices/channel/target").set("state", "connected")
    elif agent == DISCONNECTED:
        root.find("./devices/channel/target").set("state", "disconnected")
    return etree.tostring(root, encoding="unicode")


# --- the agent's state, as libvirt reports it ----------------------------------


@pytest.mark.parametrize("agent", [CONNECTED, DISCONNECTED, ABSENT])
def test_agent_state_reads_the_channel_target(agent: str) -> None:
    assert snapshots.agent_state(_domain_xml("/v/vol.qcow2", agent)) == agent


def test_agent_state_without_a_state_attribute_is_disconnected() -> None:
    xml = _domain_xml("/v/vol.qcow2", CONNECTED).replace(' state="connected"', "")
    assert snapshots.agent_state(xml) == DISCONNECTED


def test_agent_state_ignores_other_channels() -> None:
    xml = _domain_xml("/v/vol.qcow2", CONNECTED).replace(
        snapshots.AGENT_CHANNEL, "org.example.other.0"
    )
    assert snapshots.agent_state(xml) == ABSENT


# --- os_require_quiesce ----------------------------------------------------------


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({}, False),
        ({"os_require_quiesce": "no"}, False),
        ({"os_require_quiesce": "False"}, False),
        ({"os_require_quiesce": "0"}, False),
        ({"os_require_quiesce": "yes"}, True),
        ({"os_require_quiesce": "TRUE"}, True),
        ({"os_require_quiesce": " 1 "}, True),
    ],
)
def test_image_requires_quiesce(properties: dict[str, str], expected: bool) -> None:
    assert snapshots.image_requires_quiesce(properties) is expected


def test_image_requires_quiesce_refuses_other_values() -> None:
    with pytest.raises(exception.InvalidImage, match="cirros.*os_require_quiesce='maybe': use yes"):
        snapshots.image_requires_quiesce({"os_require_quiesce": "maybe"}, "cirros")


# --- the decision ----------------------------------------------------------------

NO, QUIET, STRICT = (
    QuiescePlan(quiesce=False, strict=False),
    QuiescePlan(quiesce=True, strict=False),
    QuiescePlan(quiesce=True, strict=True),
)


@pytest.mark.parametrize(
    ("kind", "running", "agent", "requested", "required", "plan"),
    [
        # The agent is there: every external snapshot of a running server is quiesced.
        ("external", True, CONNECTED, False, False, QUIET),
        ("external", True, CONNECTED, True, False, STRICT),
        ("external", True, CONNECTED, False, True, STRICT),
        # No agent: taken as it is, unless something requires quiesce.
        ("external", True, ABSENT, False, False, NO),
        ("external", True, DISCONNECTED, False, False, NO),
        # Memory snapshots and stopped servers are never quiesced.
        ("internal", True, CONNECTED, False, False, NO),
        ("internal", False, CONNECTED, False, False, NO),
        ("external", False, CONNECTED, False, False, NO),
        # The image's requirement does not apply to a stopped server.
        ("external", False, ABSENT, False, True, NO),
        ("internal", False, ABSENT, False, True, NO),
    ],
)
def test_plan_quiesce(
    kind: str, running: bool, agent: str, requested: bool, required: bool, plan: QuiescePlan
) -> None:
    assert snapshots.plan_quiesce(INSTANCE, "s", kind, running, agent, requested, required) == plan


@pytest.mark.parametrize(
    ("kind", "running", "agent", "requested", "required", "error", "match"),
    [
        ("internal", True, CONNECTED, True, False, exception.InvalidSnapshot, "needs an external"),
        ("internal", False, ABSENT, True, False, exception.InvalidSnapshot, "needs an external"),
        ("external", False, CONNECTED, True, False, exception.SnapshotConflict, "running server"),
        ("external", True, ABSENT, True, False, exception.SnapshotConflict, "no guest agent chan"),
        ("external", True, DISCONNECTED, True, False, exception.SnapshotConflict, "qemu-ga runn"),
        ("external", True, ABSENT, False, True, exception.SnapshotConflict, "sets os_require_q"),
        ("external", True, DISCONNECTED, False, True, exception.SnapshotConflict, "requires the"),
        ("internal", True, CONNECTED, False, True, exception.SnapshotConflict, "saves its memory"),
    ],
)
def test_plan_quiesce_refuses(
    kind: str,
    running: bool,
    agent: str,
    requested: bool,
    required: bool,
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match) as caught:
        snapshots.plan_quiesce(INSTANCE, "s", kind, running, agent, requested, required)
    assert INSTANCE in str(caught.value)


# --- the record ------------------------------------------------------------------


def test_quiesced_record_round_trips_bare_and_namespaced() -> None:
    records = {"b": False, "a": True}
    bare = snapshots.quiesced_to_xml(records)
    assert bare == (
        '<snapshots><snapshot name="a" quiesced="yes"/><snapshot name="b" quiesced="no"/>'
        "</snapshots>"
    )
    assert snapshots.quiesced_from_xml(bare) == records
    ns = snapshots.QUIESCE_METADATA_NAMESPACE
    namespaced = (
        f'<cdsnap:snapshots xmlns:cdsnap="{ns}">'
        '<cdsnap:snapshot name="a" quiesced="yes"/></cdsnap:snapshots>'
    )
    assert snapshots.quiesced_from_xml(namespaced) == {"a": True}


# --- create, on a fake running domain --------------------------------------------


def _agent_error(code: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_QEMU, message, 2, None, None, None, 0, 0)
    return exc


class _Snap:
    def __init__(self, xml: str) -> None:
        self.xml = xml

    def getXMLDesc(self, flags: int = 0) -> str:
        return self.xml

    def delete(self, flags: int = 0) -> None:
        raise AssertionError("not used here")


class FakeDomain:
    """A running domain: records snapshot calls, fails them as told, keeps metadata."""

    def __init__(self, volume: str, agent: str, failures: list[libvirt.libvirtError]) -> None:
        self.volume = volume
        self.agent = agent
        self.failures = failures
        self.calls: list[int] = []
        self.thaws = 0
        self.snaps: dict[str, _Snap] = {}
        self.meta: str | None = None
        self.meta_flags = 0

    def isActive(self) -> bool:
        return True

    def hasManagedSaveImage(self, flags: int) -> bool:
        return False

    def XMLDesc(self, flags: int) -> str:
        return _domain_xml(self.volume, self.agent)

    def listAllSnapshots(self, flags: int) -> list[_Snap]:
        return list(self.snaps.values())

    def snapshotLookupByName(self, name: str, flags: int) -> _Snap:
        if name in self.snaps:
            return self.snaps[name]
        raise _agent_error(libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT, "no snapshot")

    def snapshotCreateXML(self, xml: str, flags: int) -> _Snap:
        self.calls.append(flags)
        if self.failures:
            raise self.failures.pop(0)
        request = DomainSnapshot.parse(xml)
        request.state = "disk-snapshot"
        request.creation_time = 1795641454
        snap = _Snap(request.to_string())
        self.snaps[request.name or ""] = snap
        return snap

    def fsThaw(self, mountpoints: Any, flags: int) -> int:
        self.thaws += 1
        return 0

    def metadata(self, kind: int, uri: str, flags: int) -> str:
        assert (kind, uri) == (
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            snapshots.QUIESCE_METADATA_NAMESPACE,
        )
        if self.meta is None:
            raise _agent_error(libvirt.VIR_ERR_NO_DOMAIN_METADATA, "no metadata")
        return self.meta

    def setMetadata(self, kind: int, xml: str, key: str, uri: str, flags: int) -> None:
        assert (kind, key, uri) == (
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            snapshots.QUIESCE_METADATA_PREFIX,
            snapshots.QUIESCE_METADATA_NAMESPACE,
        )
        self.meta, self.meta_flags = xml, flags


def _fake(tmp_path: Path, agent: str, *failures: libvirt.libvirtError) -> FakeDomain:
    return FakeDomain(str(tmp_path / "vol.qcow2"), agent, list(failures))


UNRESPONSIVE = (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, "Guest agent is not responding: timeout")
COMMAND_FAILED = (
    libvirt.VIR_ERR_INTERNAL_ERROR,
    "internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': busy",
)


def test_connected_agent_quiesces_and_records_it(tmp_path: Path) -> None:
    dom = _fake(tmp_path, CONNECTED)
    manager = snapshots.SnapshotManager(max_per_instance=5)
    info = manager.create(dom, INSTANCE, "s1", "external")
    assert info.name == "s1"
    assert len(dom.calls) == 1 and dom.calls[0] & QUIESCE
    assert dom.thaws == 0  # libvirt thawed: nothing failed
    assert manager.quiesced(dom, INSTANCE) == {"s1": True}
    assert dom.meta_flags == libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_AFFECT_LIVE


@pytest.mark.parametrize("error", [UNRESPONSIVE, COMMAND_FAILED])
def test_failed_freeze_falls_back_and_thaws(tmp_path: Path, error: tuple[int, str]) -> None:
    dom = _fake(tmp_path, CONNECTED, _agent_error(*error))
    manager = snapshots.SnapshotManager(max_per_instance=5)
    manager.create(dom, INSTANCE, "s1", "external")
    assert [bool(f & QUIESCE) for f in dom.calls] == [True, False]
    assert dom.thaws == 1
    assert manager.quiesced(dom, INSTANCE) == {"s1": False}


@pytest.mark.parametrize(
    "kwargs", [dict(quiesce=True), dict(require_quiesce=True)], ids=["requested", "required"]
)
def test_failed_freeze_refuses_a_required_quiesce(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    dom = _fake(tmp_path, CONNECTED, _agent_error(*UNRESPONSIVE))
    manager = snapshots.SnapshotManager(max_per_instance=5)
    with pytest.raises(exception.SnapshotConflict, match="nothing was changed") as caught:
        manager.create(dom, INSTANCE, "s1", "external", **kwargs)
    assert "could not freeze" in str(caught.value) and "not responding" in str(caught.value)
    assert len(dom.calls) == 1 and dom.thaws == 1
    assert dom.snaps == {} and dom.meta is None
    assert list(tmp_path.iterdir()) == []


def test_required_quiesce_without_agent_refuses_before_libvirt(tmp_path: Path) -> None:
    dom = _fake(tmp_path, ABSENT)
    manager = snapshots.SnapshotManager(max_per_instance=5)
    with pytest.raises(exception.SnapshotConflict, match="os_require_quiesce"):
        manager.create(dom, INSTANCE, "s1", "external", require_quiesce=True)
    assert dom.calls == [] and dom.thaws == 0 and dom.meta is None


def test_no_agent_snapshots_without_quiesce(tmp_path: Path) -> None:
    dom = _fake(tmp_path, DISCONNECTED)
    manager = snapshots.SnapshotManager(max_per_instance=5)
    manager.create(dom, INSTANCE, "s1", "external")
    assert [bool(f & QUIESCE) for f in dom.calls] == [False]
    assert manager.quiesced(dom, INSTANCE) == {"s1": False}


def test_internal_snapshot_of_a_running_server_is_never_frozen(tmp_path: Path) -> None:
    dom = _fake(tmp_path, CONNECTED)
    manager = snapshots.SnapshotManager(max_per_instance=5)
    manager.create(dom, INSTANCE, "s1", "internal")
    assert [bool(f & QUIESCE) for f in dom.calls] == [False]
    assert dom.thaws == 0
    assert manager.quiesced(dom, INSTANCE) == {"s1": False}


def test_other_failures_of_a_quiesced_snapshot_are_not_retried(tmp_path: Path) -> None:
    dom = _fake(tmp_path, CONNECTED, _agent_error(libvirt.VIR_ERR_OPERATION_FAILED, "disk full"))
    manager = snapshots.SnapshotManager(max_per_instance=5)
    with pytest.raises(exception.VirtError, match="disk full"):
        manager.create(dom, INSTANCE, "s1", "external")
    assert len(dom.calls) == 1 and dom.thaws == 1


def test_agent_failure_after_the_snapshot_is_not_retried(tmp_path: Path) -> None:
    """libvirt reports a failed thaw as a failed snapshot, although the snapshot exists."""
    dom = _fake(tmp_path, CONNECTED)
    real_create = dom.snapshotCreateXML

    def create_then_fail(xml: str, flags: int) -> _Snap:
        real_create(xml, flags)
        raise _agent_error(*UNRESPONSIVE)

    dom.snapshotCreateXML = create_then_fail  # type: ignore[method-assign]
    manager = snapshots.SnapshotManager(max_per_instance=5)
    with pytest.raises(exception.VirtError, match="not responding"):
        manager.create(dom, INSTANCE, "s1", "external")
    assert len(dom.calls) == 1 and dom.thaws == 1


def test_unreadable_record_reads_as_nothing_quiesced(tmp_path: Path) -> None:
    dom = _fake(tmp_path, DISCONNECTED)
    dom.meta = "<snapshots><snapshot"
    manager = snapshots.SnapshotManager(max_per_instance=5)
    manager.create(dom, INSTANCE, "s1", "external")
    assert manager.quiesced(dom, INSTANCE) == {"s1": False}


def test_record_keeps_only_existing_snapshots(tmp_path: Path) -> None:
    dom = _fake(tmp_path, CONNECTED)
    dom.meta = snapshots.quiesced_to_xml({"gone": True, "s0": True})
    s0 = DomainSnapshot(
        name="s0",
        state="disk-snapshot",
        disks=[
            SnapshotDisk(
                name="vda",
                snapshot="external",
                type="file",
                driver_type="qcow2",
                source_file=str(tmp_path / "vol.snap-s0.qcow2"),
            )
        ],
    )
    dom.snaps["s0"] = _Snap(s0.to_string())
    manager = snapshots.SnapshotManager(max_per_instance=5)
    manager.create(dom, INSTANCE, "s1", "external")
    assert snapshots.quiesced_from_xml(dom.meta) == {"s0": True, "s1": True}


# --- the record on libvirt's test driver ----------------------------------------


@pytest.fixture
def driver(tmp_path: Path) -> LibvirtDriver:
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    snapshots_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("state_path", str(tmp_path))
    conf.set_override("uri", "test:///default", group="libvirt")
    drv = LibvirtDriver(conf)
    drv.init_host("unit")
    return drv


def test_test_driver_keeps_the_record_through_create_and_delete(
    driver: LibvirtDriver, tmp_path: Path
) -> None:
    uuid = str(uuidlib.uuid4())
    spec = base.InstanceSpec(
        uuid=uuid,
        name="quiesce",
        project="p",
        flavor=base.FlavorSpec("m1.tiny", 1, 128, 1),
        image=base.ImageSpec(uuid=str(uuidlib.uuid4()), name="i", disk_format="raw", path="/i"),
        created_at="2026-11-25T00:00:00Z",
    )
    disk = lvxml.Disk(
        type="file",
        device="disk",
        driver_type="qcow2",
        source_file=str(tmp_path / f"{uuid}_root.qcow2"),
        target_dev="vda",
        target_bus="virtio",
    )
    driver.spawn(spec, [disk], [], [base.VolumeRef(uuid + "_root", "dir", "vda")])
    try:
        virt_dom = driver.host.get_connection().lookupByUUIDString(uuid)
        driver.snapshot_create(uuid, "a", "internal")
        driver.snapshot_create(uuid, "b", "internal")
        assert {s.name: s.quiesced for s in driver.snapshot_list(uuid)} == {"a": False, "b": False}
        driver.snapshot_delete(uuid, "a")
        assert {s.name: s.quiesced for s in driver.snapshot_list(uuid)} == {"b": False}
        stored = virt_dom.metadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, snapshots.QUIESCE_METADATA_NAMESPACE, 0
        )
        assert snapshots.quiesced_from_xml(stored) == {"b": False}
    finally:
        driver.power_off(uuid, 0, 1)
        driver.snapshot_purge(uuid)
        driver.destroy(uuid)
