"""LibvirtHost across a libvirtd crash and restart, on a private libvirtd with real QEMU.

The daemon is our own (see ``private_libvirtd``): the shared system
libvirtd is never touched. Guests are TCG guests with no OS: reaching
"running" is all the test needs.
"""

from __future__ import annotations

import os
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest
from lxml import etree

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.virt.libvirt.driver import LibvirtDriver, domain_name
from compute_driver.virt.libvirt.events import DeviceRemovedEvent, LifecycleEvent
from compute_driver.virt.libvirt.host import LibvirtHost
from tests.functional import private_libvirtd


@pytest.fixture(autouse=True)
def _private_libvirtd_possible() -> None:
    # NOTE: a missing prerequisite is a failure here, not a skip: CI must not
    # pass without having restarted a libvirtd.
    problem = private_libvirtd.usable()
    if problem is not None:
        pytest.fail("cannot run a private libvirtd: %s" % problem)


#: Seconds a STOPPED event is held back in this test.
STOPPED_DELAY = 0.5
#: The close callback must report a dead libvirtd within this many seconds.
NOTICE_WITHIN = 2.0
USB_DISK_DEV = "sda"


class Recorder:
    """What the callbacks received, with a way to wait for an item."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Any]] = []
        self._cond = threading.Condition()

    def __call__(self, *args: Any) -> None:
        with self._cond:
            self.items.append((time.monotonic(), args[0] if len(args) == 1 else args))
            self._cond.notify_all()

    def wait_for(
        self, match: Callable[[Any], bool], what: str, timeout: float, after: float = 0.0
    ) -> tuple[float, Any]:
        """(time received, item) of the first item after ``after`` that ``match`` accepts."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for when, item in self.items:
                    if when >= after and match(item):
                        return when, item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "%s not received within %s s; got %r" % (what, timeout, self.items)
                    )
                self._cond.wait(left)


@pytest.fixture
def daemon() -> Iterator[private_libvirtd.PrivateLibvirtd]:
    libvirtd = private_libvirtd.PrivateLibvirtd()
    try:
        libvirtd.start()
        yield libvirtd
    finally:
        libvirtd.cleanup()


@pytest.fixture
def host(daemon: private_libvirtd.PrivateLibvirtd) -> Iterator[LibvirtHost]:
    h = LibvirtHost(daemon.uri)
    yield h
    h.close()


def _usb_disk(path: str) -> lvxml.Disk:
    # NOTE: a USB disk unplugs without help from the guest (which has no OS
    # here), so QEMU confirms the removal at once and libvirt emits
    # DEVICE_REMOVED.
    return lvxml.Disk(
        type="file",
        device="disk",
        driver_name="qemu",
        driver_type="raw",
        source_file=path,
        target_dev=USB_DISK_DEV,
        target_bus="usb",
    )


def _start_guest(conn: libvirt.virConnect, usb_disk: str | None = None) -> libvirt.virDomain:
    uuid = str(uuidlib.uuid4())
    domain = lvxml.Domain(
        type="qemu", name=domain_name(uuid), uuid=uuid, memory_kib=32 * 1024, vcpus=1
    )
    domain.os = lvxml.OS(type="hvm", arch="x86_64", machine="pc")
    if usb_disk is not None:
        domain.devices.append(_usb_disk(usb_disk))
    virt_dom = conn.defineXML(domain.to_string())
    virt_dom.create()
    return virt_dom


def _alias_of(virt_dom: libvirt.virDomain, target_dev: str) -> str:
    tree = etree.fromstring(virt_dom.XMLDesc().encode())
    return tree.xpath("./devices/disk[target/@dev=$dev]/alias/@name", dev=target_dev)[0]


def test_host_notices_a_dead_libvirtd_and_resumes_events_after_restart(daemon, host) -> None:
    states = Recorder()
    received = Recorder()
    host.on_state_change(states)
    host.events.add_callback(received)
    host.start_events(LibvirtDriver.is_instance_domain, stopped_delay=STOPPED_DELAY)

    survivor = _start_guest(host.get_connection())
    survivor_uuid = survivor.UUIDString()
    received.wait_for(
        lambda e: e == LifecycleEvent(survivor_uuid, "running"), "first guest running", 20
    )

    # libvirtd crashes: the close callback says so at once, callers get an error.
    killed_at = time.monotonic()
    daemon.kill()
    down_at, (_available, reason) = states.wait_for(
        lambda s: s[0] is False, "on_state_change(False)", 10
    )
    assert down_at - killed_at < NOTICE_WITHIN, "noticed after %.2f s" % (down_at - killed_at)
    assert "closed" in reason
    with pytest.raises(exception.HypervisorUnavailable):
        host.get_connection()

    # It comes back: the host reconnects by itself and says so.
    daemon.start()
    states.wait_for(lambda s: s[0] is True, "on_state_change(True)", 20, after=down_at)
    conn = host.get_connection()
    # Connected at the start, lost, back.
    assert [s[0] for _t, s in states.items] == [True, False, True]

    # The guest ran through the restart; its stop arrives over the new connection.
    conn.lookupByUUIDString(survivor_uuid).destroy()
    received.wait_for(
        lambda e: e == LifecycleEvent(survivor_uuid, "shutdown"), "survivor shutdown", 20
    )

    # A new guest: lifecycle and device-removal events flow again.
    disk_path = os.path.join(daemon.root, "usb.img")
    with open(disk_path, "wb") as f:
        f.truncate(1024 * 1024)
    guest = _start_guest(conn, usb_disk=disk_path)
    uuid = guest.UUIDString()
    received.wait_for(lambda e: e == LifecycleEvent(uuid, "running"), "new guest running", 20)
    alias = _alias_of(guest, USB_DISK_DEV)
    host.events.expect_device_removed(uuid, alias)
    guest.detachDeviceFlags(_usb_disk(disk_path).to_string(), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    assert host.events.wait_for_device_removed(uuid, alias, 20) == DeviceRemovedEvent(uuid, alias)
    received.wait_for(lambda e: e == DeviceRemovedEvent(uuid, alias), "device removed", 5)

    # QEMU's start is reported as RESUMED then STARTED: "running" may come twice.
    survivor_states = _states_of(received, survivor_uuid)
    assert survivor_states[-1] == "shutdown"
    assert set(survivor_states[:-1]) == {"running"}
    # The callbacks of the dead connection are gone: the new guest's start
    # gave as many events as the first one's, not twice as many.
    assert _states_of(received, uuid) == survivor_states[:-1]


def _states_of(received: Recorder, uuid: str) -> list[str]:
    return [
        e.power_state
        for _t, e in received.items
        if isinstance(e, LifecycleEvent) and e.uuid == uuid
    ]
