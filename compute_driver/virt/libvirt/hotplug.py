"""Hot-unplugging a device from a running guest, confirmed by libvirt's event.

The guest must let the device go (ACPI PCI unplug); libvirt then sends
``DEVICE_REMOVED``. A guest that refuses or does not answer keeps the device,
and the caller gets :class:`~compute_driver.exception.DeviceDetachFailed`.
"""

from __future__ import annotations

from collections.abc import Callable

import libvirt
from lxml import etree

from compute_driver import exception
from compute_driver.virt.libvirt import events
from compute_driver.virt.libvirt import xml as lvxml

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


class DeviceEditor:
    """What attaching and detaching devices of our domains share.

    :param metadata_of: reads our metadata of a domain.
    :param event_handler: the host's event handler (for DEVICE_REMOVED).
    """

    def __init__(
        self,
        metadata_of: Callable[[libvirt.virDomain], lvxml.InstanceMetadata],
        event_handler: events.DomainEventHandler,
    ) -> None:
        self._metadata_of = metadata_of
        self._events = event_handler

    @staticmethod
    def _flags(virt_dom: libvirt.virDomain) -> int:
        """Live and persistent for a running guest, persistent only otherwise."""
        return CONFIG | LIVE if virt_dom.isActive() else CONFIG

    def _save_metadata(self, virt_dom: libvirt.virDomain, meta: lvxml.InstanceMetadata) -> None:
        virt_dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            meta.to_string(),
            lvxml.METADATA_PREFIX,
            lvxml.METADATA_NAMESPACE,
            self._flags(virt_dom),
        )


def unplug_live(
    virt_dom: libvirt.virDomain,
    handler: events.DomainEventHandler,
    uuid: str,
    element: etree._Element,
    still_there: Callable[[], bool],
    timeout: float,
    device: str,
) -> None:
    """Detach ``element`` from the live guest and wait up to ``timeout`` s for it to go.

    :param still_there: whether the live definition still has the device
        (asked when no event came: it may have been missed).
    :param device: what the device is, for the error ("volume X", "port Y").
    :raises DeviceDetachFailed: the guest refused or did not answer in time.
    :raises VirtError: the hypervisor refused the request.
    """
    alias_el = element.find("./alias")
    alias = str(alias_el.get("name")) if alias_el is not None else ""
    handler.expect_device_removed(uuid, alias)
    try:
        virt_dom.detachDeviceFlags(etree.tostring(element).decode(), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as exc:
        handler.wait_for_device_removed(uuid, alias, 0)  # drop the waiter
        raise exception.VirtError(
            operation="detach " + device, instance=uuid, reason=exc.get_error_message()
        ) from exc
    outcome = handler.wait_for_device_removed(uuid, alias, timeout)
    if isinstance(outcome, events.DeviceRemovedEvent):
        return
    # NOTE: the event may have been missed (libvirtd restarted): the live
    # definition is the last word.
    if not still_there():
        return
    reason = (
        "the guest refused to release it"
        if outcome is not None
        else "the guest did not release it within %g s" % timeout
    )
    raise exception.DeviceDetachFailed(device=device, instance=uuid, reason=reason)
