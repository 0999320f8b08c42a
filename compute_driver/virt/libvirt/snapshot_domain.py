"""One libvirt domain's snapshots as libvirt keeps them, for :mod:`.snapshots`.

Looking a snapshot up and listing them parsed, the disks' current files,
refusing a suspended server, the record of which snapshots were quiesced
(our element in the domain's ``<metadata>``), and libvirt errors turned into
VirtError. Nothing here creates, reverts or deletes a snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import libvirt

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.domain_xml.base import XMLBuilderError
from compute_driver.domain_xml.snapshot import DomainSnapshot
from compute_driver.virt.libvirt.snapshot_model import (
    _EXCLUDED_DEVICES,
    QUIESCE_METADATA_NAMESPACE,
    QUIESCE_METADATA_PREFIX,
    _conflict,
    quiesced_from_xml,
    quiesced_to_xml,
)

LOG = logging.getLogger(__name__)


def _call(uuid: str, operation: str, call: Callable[..., Any], *args: Any) -> Any:
    try:
        return call(*args)
    except libvirt.libvirtError as exc:
        raise exception.VirtError(
            operation=operation, instance=uuid, reason=exc.get_error_message()
        ) from exc


def _lookup(virt_dom: libvirt.virDomain, uuid: str, name: str) -> libvirt.virDomainSnapshot:
    if not isinstance(name, str) or not name:
        raise exception.SnapshotNotFound(instance=uuid, name=name)
    try:
        return virt_dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise exception.SnapshotNotFound(instance=uuid, name=name) from exc
        raise exception.VirtError(
            operation="snapshot_lookup", instance=uuid, reason=exc.get_error_message()
        ) from exc


def _parse(uuid: str, snap: libvirt.virDomainSnapshot) -> DomainSnapshot:
    return DomainSnapshot.parse(_call(uuid, "snapshot_list", snap.getXMLDesc, 0))


def _parsed(virt_dom: libvirt.virDomain, uuid: str) -> list[DomainSnapshot]:
    snaps = _call(
        uuid,
        "snapshot_list",
        virt_dom.listAllSnapshots,
        libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL,
    )
    return [_parse(uuid, snap) for snap in snaps]


def _refuse_suspended(virt_dom: libvirt.virDomain, uuid: str, action: str, name: str) -> None:
    if not virt_dom.isActive() and virt_dom.hasManagedSaveImage(0):
        raise _conflict(
            action,
            name,
            uuid,
            "the server is suspended (its saved memory belongs to the disks as "
            "they are); resume it first",
        )


def _sources(virt_dom: libvirt.virDomain, flags: int) -> dict[str, str]:
    """``{target dev: file}`` of the domain's local file disks, CD-ROMs excluded."""
    domain = lvxml.Domain.parse(virt_dom.XMLDesc(flags))
    return {
        d.target_dev: d.source_file
        for d in domain.devices_of(lvxml.Disk)
        if d.target_dev and d.source_file and d.device not in _EXCLUDED_DEVICES
    }


# --- the quiesce record (domain metadata) ----------------------------------


def _read_quiesced(virt_dom: libvirt.virDomain, uuid: str) -> dict[str, bool]:
    try:
        text = virt_dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, QUIESCE_METADATA_NAMESPACE, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return {}
        raise exception.VirtError(
            operation="snapshot_list", instance=uuid, reason=exc.get_error_message()
        ) from exc
    try:
        return quiesced_from_xml(text)
    except XMLBuilderError as exc:
        # NOTE: unreadable reads as "nothing quiesced"; the next create rewrites it.
        LOG.warning("Server %s: ignoring unreadable snapshot metadata: %s", uuid, exc)
        return {}


def _record_quiesced(
    virt_dom: libvirt.virDomain, uuid: str, name: str, quiesced: bool | None
) -> None:
    """Set (or, with None, drop) the record of ``name``; records of gone snapshots go too.

    NOTE: a failure is only logged: the snapshot itself is done, and a
    missing record reads as "not quiesced", never the other way round.
    """
    try:
        existing = {s.name for s in _parsed(virt_dom, uuid)}
        records = {n: q for n, q in _read_quiesced(virt_dom, uuid).items() if n in existing}
        if quiesced is None:
            records.pop(name, None)
        else:
            records[name] = quiesced
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if virt_dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        virt_dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            quiesced_to_xml(records),
            QUIESCE_METADATA_PREFIX,
            QUIESCE_METADATA_NAMESPACE,
            flags,
        )
    except (libvirt.libvirtError, exception.VirtError) as exc:
        LOG.warning(
            "Server %s: could not record whether snapshot %s was quiesced: %s", uuid, name, exc
        )
