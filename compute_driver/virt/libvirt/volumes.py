"""Attaching, detaching and growing volumes of a defined guest.

A running guest gets the disk live *and* in its persistent definition, so
it survives a stop; a stopped guest only in its definition. Our
``<metadata>`` lists every attached volume, so the agent (and a hard
reboot) can find them in libvirt alone.

Detaching from a running guest asks the guest to release the disk and
waits for libvirt's ``DEVICE_REMOVED`` event (:mod:`.hotplug`): the disk
leaves the persistent definition only once the guest has let it go, so a
guest that does not answer keeps a consistent disk and a clear error.
"""

from __future__ import annotations

import logging
import string

import libvirt
from lxml import etree

from compute_driver import exception
from compute_driver.virt import base
from compute_driver.virt.libvirt import hotplug
from compute_driver.virt.libvirt import xml as lvxml

LOG = logging.getLogger(__name__)

#: libvirt user aliases must start with "ua-".
ALIAS_PREFIX = "ua-vol-"
_LIVE = hotplug.LIVE
_CONFIG = hotplug.CONFIG


def volume_alias(volume_id: str) -> str:
    """The user alias of a volume's disk: how a DEVICE_REMOVED event names it."""
    return ALIAS_PREFIX + volume_id


def _virt_error(operation: str, uuid: str, exc: libvirt.libvirtError) -> exception.VirtError:
    return exception.VirtError(operation=operation, instance=uuid, reason=exc.get_error_message())


def next_target_dev(used: set[str], prefix: str = "vd") -> str:
    """The first free ``vdX`` (then ``vdaa``...) name not in ``used``."""
    letters = string.ascii_lowercase
    names = [prefix + a for a in letters] + [prefix + a + b for a in letters for b in letters]
    for name in names:
        if name not in used:
            return name
    raise exception.Invalid(reason="no free disk name left")


def _disk_elements(virt_dom: libvirt.virDomain, flags: int = 0) -> list[etree._Element]:
    root = etree.fromstring(virt_dom.XMLDesc(flags).encode())
    return root.findall("./devices/disk")


def _find_disk(
    virt_dom: libvirt.virDomain, volume: lvxml.VolumeRef, flags: int = 0
) -> etree._Element | None:
    """The ``<disk>`` of ``volume`` in the live (or, with flags, persistent) definition."""
    for disk in _disk_elements(virt_dom, flags):
        alias = disk.find("./alias")
        target = disk.find("./target")
        if alias is not None and alias.get("name") == volume_alias(str(volume.id)):
            return disk
        if target is not None and target.get("dev") == volume.target_dev:
            return disk
    return None


class VolumeAttacher(hotplug.DeviceEditor):
    """Volume work on one host's domains (used by the libvirt driver)."""

    def attach(
        self, virt_dom: libvirt.virDomain, uuid: str, disk: lvxml.Disk, volume: base.VolumeRef
    ) -> str:
        """Attach ``disk`` (of ``volume``); returns its target device.

        Idempotent: a volume already attached keeps its device.

        :raises VirtError: the hypervisor refused; nothing is attached.
        """
        meta = self._metadata_of(virt_dom)
        for ref in meta.volumes:
            if ref.id == volume.id:
                LOG.info(
                    "Volume %s is already attached to %s as %s", volume.id, uuid, ref.target_dev
                )
                return str(ref.target_dev)
        used = {
            t.get("dev")
            for d in _disk_elements(virt_dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
            + _disk_elements(virt_dom)
            if (t := d.find("./target")) is not None
        }
        target = volume.target_dev or next_target_dev({u for u in used if u})
        disk.target_dev = target
        disk.target_bus = disk.target_bus or "virtio"
        disk.alias = volume_alias(volume.id)
        # NOTE: the serial is what the guest sees as the disk's id
        # (/dev/disk/by-id/virtio-<serial>): the volume id, cut to 20 bytes.
        disk.serial = disk.serial or volume.id[:20]
        flags = self._flags(virt_dom)
        try:
            virt_dom.attachDeviceFlags(disk.to_string(), flags)
        except libvirt.libvirtError as exc:
            raise _virt_error("attach volume %s" % volume.id, uuid, exc) from exc
        meta.volumes.append(
            lvxml.VolumeRef(id=volume.id, backend=volume.backend, target_dev=target)
        )
        try:
            self._save_metadata(virt_dom, meta)
        except libvirt.libvirtError as exc:
            # NOTE: a disk our metadata does not list would be invisible to a
            # hard reboot; take it off again rather than leave it half-known.
            self._detach_element(virt_dom, uuid, volume, flags)
            raise _virt_error("record volume %s" % volume.id, uuid, exc) from exc
        LOG.info("Volume %s attached to %s as %s", volume.id, uuid, target)
        return target

    def _detach_element(
        self, virt_dom: libvirt.virDomain, uuid: str, volume: base.VolumeRef, flags: int
    ) -> None:
        ref = lvxml.VolumeRef(id=volume.id, backend=volume.backend, target_dev=volume.target_dev)
        for flag in (_LIVE, _CONFIG):
            if not flags & flag:
                continue
            element = _find_disk(
                virt_dom, ref, libvirt.VIR_DOMAIN_XML_INACTIVE if flag == _CONFIG else 0
            )
            if element is not None:
                try:
                    virt_dom.detachDeviceFlags(etree.tostring(element).decode(), flag)
                except libvirt.libvirtError:
                    LOG.exception("Could not take volume %s off %s again", volume.id, uuid)

    def detach(
        self, virt_dom: libvirt.virDomain, uuid: str, volume_id: str, timeout: float
    ) -> None:
        """Detach the volume; a running guest must release it within ``timeout`` s.

        Idempotent: a volume not attached is not an error.

        :raises DeviceDetachFailed: the guest refused or did not answer in
            time; the disk stays attached and in the definition.
        :raises VirtError: the hypervisor refused.
        """
        meta = self._metadata_of(virt_dom)
        ref = next((v for v in meta.volumes if v.id == volume_id), None)
        if ref is None:
            LOG.info("Volume %s is not attached to %s", volume_id, uuid)
            return
        if virt_dom.isActive():
            live = _find_disk(virt_dom, ref)
            if live is not None:
                hotplug.unplug_live(
                    virt_dom,
                    self._events,
                    uuid,
                    live,
                    lambda: _find_disk(virt_dom, ref) is not None,
                    timeout,
                    "volume " + volume_id,
                )
        persistent = _find_disk(virt_dom, ref, libvirt.VIR_DOMAIN_XML_INACTIVE)
        if persistent is not None:
            try:
                virt_dom.detachDeviceFlags(etree.tostring(persistent).decode(), _CONFIG)
            except libvirt.libvirtError as exc:
                raise _virt_error("detach volume %s" % volume_id, uuid, exc) from exc
        meta.volumes = [v for v in meta.volumes if v.id != volume_id]
        try:
            self._save_metadata(virt_dom, meta)
        except libvirt.libvirtError as exc:
            raise _virt_error("record the detach of volume %s" % volume_id, uuid, exc) from exc
        LOG.info("Volume %s detached from %s", volume_id, uuid)

    def extend(
        self, virt_dom: libvirt.virDomain, uuid: str, volume_id: str, size_bytes: int
    ) -> None:
        """Grow an attached volume through QEMU, so a running guest sees the new size.

        :raises VolumeNotAttached: the volume is not attached to this guest.
        :raises VirtError: the hypervisor refused.
        """
        meta = self._metadata_of(virt_dom)
        ref = next((v for v in meta.volumes if v.id == volume_id), None)
        if ref is None:
            raise exception.VolumeNotAttached(volume=volume_id, instance=uuid)
        try:
            virt_dom.blockResize(
                str(ref.target_dev), size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES
            )
        except libvirt.libvirtError as exc:
            raise _virt_error("grow volume %s" % volume_id, uuid, exc) from exc
        LOG.info("Volume %s of %s grown to %d bytes", volume_id, uuid, size_bytes)
