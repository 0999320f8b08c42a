"""Volume attach/detach helpers: device naming, and the paths where a guest does not cooperate.

The working paths run on real QEMU guests (tests/functional/test_volumes.py);
the domain here is a stand-in, only to reach a guest that never releases a
disk (libvirt's test driver cannot attach devices at all).
"""

from __future__ import annotations

import libvirt
import pytest

from compute_driver import exception
from compute_driver.virt.libvirt import events, volumes
from compute_driver.virt.libvirt import xml as lvxml

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
    assert dom.detach_calls == [libvirt.VIR_DOMAIN_AFFECT_LIVE]
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
