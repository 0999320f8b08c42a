"""Hot-unplugging a device from a running guest, confirmed by libvirt's event.

The guest must let the device go (ACPI PCI unplug); libvirt then sends
``DEVICE_REMOVED``. A request the guest drops (it was booting) is sent
again, with backoff, within the caller's timeout. A guest that refuses or
does not answer keeps the device, and the caller gets
:class:`~compute_driver.exception.DeviceDetachFailed`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import libvirt
from lxml import etree

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.virt.libvirt import events

LOG = logging.getLogger(__name__)

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
#: Seconds to wait for the guest's answer to the first unplug request
#: before sending it again; each next wait doubles, up to MAX_WAIT.
FIRST_WAIT = 1.0
MAX_WAIT = 8.0


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

    The request is sent again, after waits that double from
    :data:`FIRST_WAIT` to :data:`MAX_WAIT`, until the guest lets the device
    go or ``timeout`` runs out: a guest that is still booting drops an
    unplug request (its kernel clears the pending ACPI event) and only a
    later one reaches it. Nova's libvirt driver retries the same way.

    :param still_there: whether the live definition still has the device
        (asked when no event came: it may have been missed).
    :param device: what the device is, for the error ("volume X", "port Y").
    :raises DeviceDetachFailed: the guest refused, or did not release the
        device within ``timeout``.
    :raises VirtError: the hypervisor refused the request.
    """
    alias_el = element.find("./alias")
    alias = str(alias_el.get("name")) if alias_el is not None else ""
    xml = etree.tostring(element).decode()
    deadline = time.monotonic() + timeout
    wait = FIRST_WAIT
    attempt = 0
    while True:
        attempt += 1
        handler.expect_device_removed(uuid, alias)
        try:
            virt_dom.detachDeviceFlags(xml, LIVE)
        except libvirt.libvirtError as exc:
            if _gone(exc):
                handler.wait_for_device_removed(uuid, alias, 0)  # drop the waiter
                return
            if not _in_progress(exc):
                handler.wait_for_device_removed(uuid, alias, 0)
                raise exception.VirtError(
                    operation="detach " + device, instance=uuid, reason=exc.get_error_message()
                ) from exc
            # NOTE: QEMU still works on an earlier request: wait for its outcome.
        left = deadline - time.monotonic()
        outcome = handler.wait_for_device_removed(uuid, alias, max(0.0, min(wait, left)))
        if isinstance(outcome, events.DeviceRemovedEvent):
            return
        # NOTE: the event may have been missed (libvirtd restarted): the live
        # definition is the last word.
        if not still_there():
            return
        if isinstance(outcome, events.DeviceRemovalFailedEvent):
            raise exception.DeviceDetachFailed(
                device=device, instance=uuid, reason="the guest refused to release it"
            )
        if time.monotonic() >= deadline:
            raise exception.DeviceDetachFailed(
                device=device,
                instance=uuid,
                reason="the guest did not release it within %g s (%d requests)"
                % (timeout, attempt),
            )
        LOG.info(
            "%s of %s: no answer to unplug request %d within %g s; asking again",
            device,
            uuid,
            attempt,
            wait,
        )
        wait = min(wait * 2, MAX_WAIT)


def _gone(exc: libvirt.libvirtError) -> bool:
    """libvirt says the device is not there (any more)."""
    code, msg = exc.get_error_code(), exc.get_error_message() or ""
    return code in (libvirt.VIR_ERR_DEVICE_MISSING, libvirt.VIR_ERR_NO_DOMAIN) or (
        code == libvirt.VIR_ERR_OPERATION_FAILED and "not found" in msg
    )


def _in_progress(exc: libvirt.libvirtError) -> bool:
    """QEMU refuses a repeated request while it works on an earlier one."""
    return "already in the process of unplug" in (exc.get_error_message() or "")
