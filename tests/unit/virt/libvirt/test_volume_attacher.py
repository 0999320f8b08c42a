"""Volume attach/detach helpers: device naming, and the paths where a guest does not cooperate.

The working paths run on real QEMU guests (tests/functional/test_volumes.py);
the domain here is a stand-in, only to reach a guest that never releases a
disk (libvirt's test driver cannot attach devices at all).
"""

from __future__ import annotations

import libvirt
import pytest

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.virt import base
from compute_driver.virt.libvirt import events, guest_xml, hotplug, volumes

UUID = "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10"
VOLUME = "3c2b1a09-8f7e-4d6c-9b5a-493827160504"
DISK = (
    "<disk type='file' device='disk'><source file='/v/%s'/>"
    "<target dev='vdb' bus='virtio'/><alias name='ua-vol-%s'/></disk>" % (VOLUME, VOLUME)
)


class StubbornDomain:
    """A running domain whose guest never lets its disk go."""

    def __init__(self) -> None:
        self.detach_calls: list[int] = []
        self.saved: list[str] = []

    def isActive(self) -> bool:  # noqa: N802 - libvirt's name
        return True

    def UUIDString(self) -> str:  # noqa: N802
        return UUID

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return "<domain><devices>%s</devices></domain>" % DISK

    def detachDeviceFlags(self, xml: str, flags: int) -> None:  # noqa: N802
        self.detach_calls.append(flags)

    def setMetadata(self, *args: object) -> None:  # noqa: N802
        self.saved.append(str(args[1]))


def _metadata(_dom: object) -> lvxml.InstanceMetadata:
    return lvxml.InstanceMetadata(
        uuid=UUID,
        volumes=[lvxml.VolumeRef(id=VOLUME, backend="dir", target_dev="vdb")],
    )


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        (set(), "vda"),
        ({"vda"}, "vdb"),
        ({"vda", "vdb", "vdd"}, "vdc"),
        ({"vd" + c for c in "abcdefghijklmnopqrstuvwxyz"}, "vdaa"),
    ],
)
def test_next_target_dev_takes_the_first_free_name(used: set[str], expected: str) -> None:
    assert volumes.next_target_dev(used) == expected


def test_a_guest_that_never_releases_keeps_the_disk_and_says_so() -> None:
    dom = StubbornDomain()
    attacher = volumes.VolumeAttacher(_metadata, events.DomainEventHandler())
    with pytest.raises(exception.DeviceDetachFailed, match="did not release it within 0.2 s"):
        attacher.detach(dom, UUID, VOLUME, timeout=0.2)  # type: ignore[arg-type]
    # Only the live unplug was asked for: the definition and our metadata keep the disk.
    assert set(dom.detach_calls) == {libvirt.VIR_DOMAIN_AFFECT_LIVE}
    assert dom.saved == []


def test_detaching_a_volume_that_is_not_attached_is_a_no_op() -> None:
    dom = StubbornDomain()
    attacher = volumes.VolumeAttacher(_metadata, events.DomainEventHandler())
    attacher.detach(dom, UUID, "another-volume", timeout=0.2)  # type: ignore[arg-type]
    assert dom.detach_calls == [] and dom.saved == []


def test_growing_a_volume_that_is_not_attached_is_refused() -> None:
    attacher = volumes.VolumeAttacher(_metadata, events.DomainEventHandler())
    with pytest.raises(exception.VolumeNotAttached):
        attacher.extend(StubbornDomain(), UUID, "another-volume", 2 * 1024**3)  # type: ignore[arg-type]


# --- identity: alias and serial, never the target name (issue 12, items 10-12) ---

ROOT = UUID + "_root"


def _disk_xml(volume_id: str, dev: str, bus: str = "scsi") -> str:
    disk = lvxml.Disk(
        type="file",
        device="disk",
        driver_name="qemu",
        driver_type="qcow2",
        source_file="/v/%s" % volume_id,
        target_dev=dev,
        target_bus=bus,
    )
    guest_xml.identify(disk, volume_id)
    return disk.to_string()


class FakeDomain:
    """A running domain with a live and a persistent definition (lists of
    ``<disk>`` documents); the guest ignores the first ``ignored`` live
    unplug requests, as a guest still booting does."""

    def __init__(self, disks: list[str], ignored: int = 0) -> None:
        self.live, self.config = list(disks), list(disks)
        self.ignored = ignored
        self.detached: list[tuple[str | None, int]] = []
        self.attached: list[tuple[str, int]] = []
        self.resized: list[tuple[str, int]] = []
        self.saved: list[str] = []

    def isActive(self) -> bool:  # noqa: N802 - libvirt's name
        return True

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        disks = self.config if flags & libvirt.VIR_DOMAIN_XML_INACTIVE else self.live
        return "<domain><devices>%s</devices></domain>" % "".join(disks)

    def _drop(self, disks: list[str], xml: str) -> str | None:
        alias = lvxml.Disk.parse(xml).alias
        for text in disks:
            if lvxml.Disk.parse(text).alias == alias:
                disks.remove(text)
                return alias
        return None

    def detachDeviceFlags(self, xml: str, flags: int) -> None:  # noqa: N802
        alias = lvxml.Disk.parse(xml).alias
        self.detached.append((alias, flags))
        if flags == libvirt.VIR_DOMAIN_AFFECT_LIVE:
            if self.ignored:
                self.ignored -= 1
                return  # the request is lost: no event, the disk stays
            self._drop(self.live, xml)
        else:
            self._drop(self.config, xml)

    def attachDeviceFlags(self, xml: str, flags: int) -> None:  # noqa: N802
        self.attached.append((xml, flags))
        self.live.append(xml)
        self.config.append(xml)

    def blockResize(self, disk: str, size: int, flags: int) -> None:  # noqa: N802
        self.resized.append((disk, size))

    def setMetadata(self, *args: object) -> None:  # noqa: N802
        self.saved.append(str(args[1]))


def _confused_metadata(_dom: object) -> lvxml.InstanceMetadata:
    """What main left after a hard reboot on scsi: the volume's entry names the root's disk."""
    return lvxml.InstanceMetadata(
        uuid=UUID,
        volumes=[
            lvxml.VolumeRef(id=ROOT, backend="dir", target_dev="sda"),
            lvxml.VolumeRef(id=VOLUME, backend="dir", target_dev="sda"),
        ],
        disks=lvxml.DiskPolicy(bus="scsi"),
    )


def test_resize_grows_the_volume_not_the_root_whatever_the_recorded_name() -> None:
    dom = FakeDomain([_disk_xml(ROOT, "sda"), _disk_xml(VOLUME, "sdb")])
    attacher = volumes.VolumeAttacher(_confused_metadata, events.DomainEventHandler())
    attacher.extend(dom, UUID, VOLUME, 2 * 1024**3)  # type: ignore[arg-type]
    assert dom.resized == [("sdb", 2 * 1024**3)]


def test_detach_takes_the_volume_off_and_leaves_the_root() -> None:
    dom = FakeDomain([_disk_xml(ROOT, "sda"), _disk_xml(VOLUME, "sdb")])
    attacher = volumes.VolumeAttacher(_confused_metadata, events.DomainEventHandler())
    attacher.detach(dom, UUID, VOLUME, timeout=5)  # type: ignore[arg-type]
    alias = guest_xml.volume_alias(VOLUME)
    assert {a for a, _ in dom.detached} == {alias}
    assert [lvxml.Disk.parse(d).alias for d in dom.live + dom.config] == [
        guest_xml.volume_alias(ROOT)
    ] * 2
    assert [v.id for v in lvxml.InstanceMetadata.parse(dom.saved[-1]).volumes] == [ROOT]


def test_a_hot_attached_volume_gets_the_guests_disk_settings_and_identity() -> None:
    def metadata(_dom: object) -> lvxml.InstanceMetadata:
        return lvxml.InstanceMetadata(
            uuid=UUID,
            volumes=[lvxml.VolumeRef(id=ROOT, backend="dir", target_dev="sda")],
            disks=lvxml.DiskPolicy(bus="scsi", cache="writeback", total_iops_sec=500),
        )

    dom = FakeDomain([_disk_xml(ROOT, "sda")])
    attacher = volumes.VolumeAttacher(metadata, events.DomainEventHandler())
    disk = lvxml.Disk(type="file", device="disk", source_file="/v/new", target_dev="vda")
    target = attacher.attach(dom, UUID, disk, base.VolumeRef(VOLUME, "dir", ""))  # type: ignore[arg-type]
    assert target == "sdb"
    ((xml, flags),) = dom.attached
    got = lvxml.Disk.parse(xml)
    assert (got.target_dev, got.target_bus, got.cache, got.total_iops_sec) == (
        "sdb",
        "scsi",
        "writeback",
        500,
    )
    assert (got.alias, got.serial) == (guest_xml.volume_alias(VOLUME), VOLUME[:20])
    assert flags == libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG


def test_an_unplug_request_the_booting_guest_dropped_is_sent_again(monkeypatch) -> None:
    monkeypatch.setattr(hotplug, "FIRST_WAIT", 0.01)
    dom = FakeDomain([_disk_xml(ROOT, "vda", "virtio"), _disk_xml(VOLUME, "vdb", "virtio")], 2)

    def metadata(_dom: object) -> lvxml.InstanceMetadata:
        return lvxml.InstanceMetadata(
            uuid=UUID,
            volumes=[
                lvxml.VolumeRef(id=ROOT, backend="dir", target_dev="vda"),
                lvxml.VolumeRef(id=VOLUME, backend="dir", target_dev="vdb"),
            ],
        )

    attacher = volumes.VolumeAttacher(metadata, events.DomainEventHandler())
    attacher.detach(dom, UUID, VOLUME, timeout=3)  # type: ignore[arg-type]
    live, config = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG
    assert [flags for _, flags in dom.detached] == [live, live, live, config]
    assert len(dom.live) == len(dom.config) == 1


def test_a_volume_whose_disk_cannot_be_told_apart_is_not_dropped() -> None:
    """A domain an older release redefined: no disk carries a name; detaching
    must not drop the volume from our metadata while its disk stays in the guest."""
    dom = FakeDomain(
        [
            lvxml.Disk(type="file", device="disk", source_file=path, target_dev=dev).to_string()
            for path, dev in (("/v/root", "sda"), ("/v/data", "sdb"))
        ]
    )
    attacher = volumes.VolumeAttacher(_confused_metadata, events.DomainEventHandler())
    with pytest.raises(exception.VirtError, match="hard reboot the server"):
        attacher.detach(dom, UUID, VOLUME, timeout=1)  # type: ignore[arg-type]
    assert dom.detached == [] and dom.saved == []


def test_a_volume_whose_disk_is_gone_is_dropped_from_a_named_domain() -> None:
    """The agent died between taking the disk off and recording it: a repeat records it."""
    dom = FakeDomain([_disk_xml(ROOT, "sda")])
    attacher = volumes.VolumeAttacher(_confused_metadata, events.DomainEventHandler())
    attacher.detach(dom, UUID, VOLUME, timeout=1)  # type: ignore[arg-type]
    assert dom.detached == []
    assert [v.id for v in lvxml.InstanceMetadata.parse(dom.saved[-1]).volumes] == [ROOT]
