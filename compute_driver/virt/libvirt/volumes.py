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

import libvirt
from lxml import etree

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.virt import base
from compute_driver.virt.libvirt import guest_xml, hotplug
from compute_driver.virt.libvirt.guest_config import DISK_BUSES, DiskSettings

LOG = logging.getLogger(__name__)

_LIVE = hotplug.LIVE
_CONFIG = hotplug.CONFIG
_INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
ALIAS_PREFIX = guest_xml.VOLUME_ALIAS_PREFIX
volume_alias = guest_xml.volume_alias
next_target_dev = guest_xml.next_target_dev


def _virt_error(operation: str, uuid: str, exc: libvirt.libvirtError) -> exception.VirtError:
    return exception.VirtError(operation=operation, instance=uuid, reason=exc.get_error_message())


def _disk_elements(virt_dom: libvirt.virDomain, flags: int = 0) -> list[etree._Element]:
    root = etree.fromstring(virt_dom.XMLDesc(flags).encode())
    return root.findall("./devices/disk")


def _find_disk(
    virt_dom: libvirt.virDomain, volume_id: str, flags: int = 0
) -> etree._Element | None:
    """The ``<disk>`` of ``volume_id`` in the live (or, with flags, persistent) definition.

    NOTE: found by its alias, else by its serial: both stay with the volume
    through every redefine. Never by target name: a change of bus renames
    disks, and a volume once had the name the root disk has now.
    """
    alias, serial = guest_xml.volume_alias(volume_id), guest_xml.volume_serial(volume_id)
    by_serial = None
    for disk in _disk_elements(virt_dom, flags):
        alias_el = disk.find("./alias")
        if alias_el is not None and alias_el.get("name") == alias:
            return disk
        if by_serial is None and disk.findtext("./serial") == serial:
            by_serial = disk
    return by_serial


def _unnamed_disks(virt_dom: libvirt.virDomain) -> list[etree._Element]:
    """The guest disks (not cdroms) without a volume alias, live or defined."""
    unnamed = []
    for flags in (0, _INACTIVE):
        for disk in _disk_elements(virt_dom, flags):
            alias = disk.find("./alias")
            name = alias.get("name", "") if alias is not None else ""
            if disk.get("device", "disk") == "disk" and not name.startswith(
                guest_xml.VOLUME_ALIAS_PREFIX
            ):
                unnamed.append(disk)
    return unnamed


def _disk_settings(virt_dom: libvirt.virDomain, meta: lvxml.InstanceMetadata) -> DiskSettings:
    """The disk settings the guest's disks were defined with (kept in our metadata)."""
    if meta.disks is not None:
        return guest_xml.disk_settings_of(meta.disks)
    # NOTE: a domain defined before the settings were kept: its first disk
    # (the root) shows at least the bus.
    for disk in _disk_elements(virt_dom, libvirt.VIR_DOMAIN_XML_INACTIVE):
        bus = disk.find("./target")
        if disk.get("device", "disk") == "disk" and bus is not None:
            if bus.get("bus") in DISK_BUSES:
                return DiskSettings(bus=str(bus.get("bus")))
    return DiskSettings()


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
        defined = _find_disk(virt_dom, volume.id, libvirt.VIR_DOMAIN_XML_INACTIVE)
        if defined is not None and (old := defined.find("./target")) is not None:
            # NOTE: attached before, and the agent died before recording it.
            target = str(old.get("dev"))
            meta.volumes.append(
                lvxml.VolumeRef(id=volume.id, backend=volume.backend, target_dev=target)
            )
            try:
                self._save_metadata(virt_dom, meta)
            except libvirt.libvirtError as exc:
                raise _virt_error("record volume %s" % volume.id, uuid, exc) from exc
            return target
        # NOTE: the disk gets what the guest's other disks got at define
        # (bus, cache, io, iotune), a name for that bus, and the alias and
        # serial a redefine gives it again: it looks the same from attach
        # to detach, across reboots.
        wanted = _disk_settings(virt_dom, meta)
        prefix = guest_xml.target_prefix(wanted.bus)
        used = {
            str(t.get("dev"))
            for d in _disk_elements(virt_dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
            + _disk_elements(virt_dom)
            if (t := d.find("./target")) is not None and t.get("dev")
        }
        target = volume.target_dev
        if not target or not target.startswith(prefix) or target in used:
            target = guest_xml.next_target_dev(used, prefix)
        disk.target_dev = target
        guest_xml.apply_disk_settings(disk, wanted)
        guest_xml.identify(disk, volume.id)
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
        for flag in (_LIVE, _CONFIG):
            if not flags & flag:
                continue
            element = _find_disk(
                virt_dom, volume.id, libvirt.VIR_DOMAIN_XML_INACTIVE if flag == _CONFIG else 0
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
        active = virt_dom.isActive()
        live = _find_disk(virt_dom, volume_id) if active else None
        if live is None and _find_disk(virt_dom, volume_id, _INACTIVE) is None:
            if _unnamed_disks(virt_dom):
                # NOTE: a domain defined before disks were named: the
                # volume's disk may be one of those; dropping it from our
                # metadata would leave it in the guest, marked available.
                raise exception.VirtError(
                    operation="detach volume %s" % volume_id,
                    instance=uuid,
                    reason="no disk carries its alias or serial, and some carry none "
                    "(defined by an older release); hard reboot the server to name "
                    "its disks, then detach",
                )
        if active:
            if live is not None:
                hotplug.unplug_live(
                    virt_dom,
                    self._events,
                    uuid,
                    live,
                    lambda: _find_disk(virt_dom, volume_id) is not None,
                    timeout,
                    "volume " + volume_id,
                )
        persistent = _find_disk(virt_dom, volume_id, _INACTIVE)
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
        disk = _find_disk(virt_dom, volume_id)
        target = disk.find("./target") if disk is not None else None
        if not any(v.id == volume_id for v in meta.volumes) or target is None:
            raise exception.VolumeNotAttached(volume=volume_id, instance=uuid)
        try:
            # NOTE: the name the disk has now, read from the disk found by
            # its alias: not the name it was attached as.
            virt_dom.blockResize(
                str(target.get("dev")), size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES
            )
        except libvirt.libvirtError as exc:
            raise _virt_error("grow volume %s" % volume_id, uuid, exc) from exc
        LOG.info("Volume %s of %s grown to %d bytes", volume_id, uuid, size_bytes)
