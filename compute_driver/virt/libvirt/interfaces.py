"""Attaching and detaching network interfaces of a defined guest.

Like volumes (:mod:`.volumes`): live and persistent when the guest runs, our
``<metadata>`` lists every port, and a detach from a running guest waits for
the guest to release the NIC (:mod:`.hotplug`).
"""

from __future__ import annotations

import logging

import libvirt
from lxml import etree

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.virt.libvirt import hotplug

LOG = logging.getLogger(__name__)

ALIAS_PREFIX = "ua-port-"
_LIVE = hotplug.LIVE
_CONFIG = hotplug.CONFIG


def port_alias(port_id: str) -> str:
    """The user alias of a port's NIC: how a DEVICE_REMOVED event names it."""
    return ALIAS_PREFIX + port_id


def _find_nic(virt_dom: libvirt.virDomain, mac: str, flags: int = 0) -> etree._Element | None:
    root = etree.fromstring(virt_dom.XMLDesc(flags).encode())
    for nic in root.findall("./devices/interface"):
        mac_el = nic.find("./mac")
        if mac_el is not None and str(mac_el.get("address")).lower() == mac.lower():
            return nic
    return None


class InterfaceAttacher(hotplug.DeviceEditor):
    """Port work on one host's domains (used by the libvirt driver)."""

    def attach(
        self,
        virt_dom: libvirt.virDomain,
        uuid: str,
        interface: lvxml.Interface,
        port: lvxml.PortRef,
    ) -> None:
        """Attach ``interface`` (of ``port``). Idempotent.

        :raises VirtError: the hypervisor refused; nothing is attached.
        """
        meta = self._metadata_of(virt_dom)
        if any(p.id == port.id for p in meta.ports):
            LOG.info("Port %s is already attached to %s", port.id, uuid)
            return
        interface.alias = port_alias(str(port.id))
        flags = self._flags(virt_dom)
        try:
            virt_dom.attachDeviceFlags(interface.to_string(), flags)
        except libvirt.libvirtError as exc:
            raise exception.VirtError(
                operation="attach port %s" % port.id, instance=uuid, reason=exc.get_error_message()
            ) from exc
        meta.ports.append(port)
        try:
            self._save_metadata(virt_dom, meta)
        except libvirt.libvirtError as exc:
            # NOTE: a NIC our metadata does not list would be invisible to a
            # hard reboot and to delete: take it off again.
            for flag in (_LIVE, _CONFIG):
                nic = _find_nic(
                    virt_dom,
                    str(port.mac),
                    libvirt.VIR_DOMAIN_XML_INACTIVE if flag == _CONFIG else 0,
                )
                if flags & flag and nic is not None:
                    try:
                        virt_dom.detachDeviceFlags(etree.tostring(nic).decode(), flag)
                    except libvirt.libvirtError:
                        LOG.exception("Could not take port %s off %s again", port.id, uuid)
            raise exception.VirtError(
                operation="record port %s" % port.id, instance=uuid, reason=exc.get_error_message()
            ) from exc
        LOG.info("Port %s (%s) attached to %s", port.id, port.mac, uuid)

    def detach(self, virt_dom: libvirt.virDomain, uuid: str, port_id: str, timeout: float) -> None:
        """Detach the port's NIC; a running guest must release it within ``timeout`` s.

        Idempotent: a port that is not attached is not an error.

        :raises DeviceDetachFailed: the guest refused or did not answer; the NIC stays.
        :raises VirtError: the hypervisor refused.
        """
        meta = self._metadata_of(virt_dom)
        ref = next((p for p in meta.ports if p.id == port_id), None)
        if ref is None:
            LOG.info("Port %s is not attached to %s", port_id, uuid)
            return
        mac = str(ref.mac)
        if virt_dom.isActive():
            live = _find_nic(virt_dom, mac)
            if live is not None:
                hotplug.unplug_live(
                    virt_dom,
                    self._events,
                    uuid,
                    live,
                    lambda: _find_nic(virt_dom, mac) is not None,
                    timeout,
                    "port " + port_id,
                )
        persistent = _find_nic(virt_dom, mac, libvirt.VIR_DOMAIN_XML_INACTIVE)
        if persistent is not None:
            try:
                virt_dom.detachDeviceFlags(etree.tostring(persistent).decode(), _CONFIG)
            except libvirt.libvirtError as exc:
                raise exception.VirtError(
                    operation="detach port %s" % port_id,
                    instance=uuid,
                    reason=exc.get_error_message(),
                ) from exc
        meta.ports = [p for p in meta.ports if p.id != port_id]
        try:
            self._save_metadata(virt_dom, meta)
        except libvirt.libvirtError as exc:
            raise exception.VirtError(
                operation="record the detach of port %s" % port_id,
                instance=uuid,
                reason=exc.get_error_message(),
            ) from exc
        LOG.info("Port %s detached from %s", port_id, uuid)
