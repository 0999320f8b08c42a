"""External snapshots (overlay files) of libvirt domains: revert, delete, and their files.

What :class:`~.snapshots.SnapshotManager` does for ``external`` snapshots
beyond libvirt's own calls, and which of our overlay files nothing needs any
more.

External revert (libvirt 9.0 has none; we do it for stopped servers only)
    Each disk gets a fresh overlay, ``<volume>.revert-<name>-<random>.qcow2``,
    on the snapshot's state file; the domain is redefined onto the overlays;
    the snapshot becomes the current one (so the next snapshot is its child);
    then every overlay file that neither the disks nor any snapshot still
    need is removed. A running server is refused (SnapshotConflict), not
    stopped for the caller: stopping a guest is the caller's decision. Only
    the disks go back: the domain's definition (memory, devices) stays, and a
    disk attached after the snapshot is left as it is.

External delete
    Refused while the snapshot has children (delete the newest first). The
    snapshot's metadata goes first: from then on its state file may change.
    Then, where a disk's chain runs through the state file, the overlay on top
    of it is merged down into it (running: ``blockCommit`` of the active layer
    and a pivot; stopped: ``qemu-img commit`` and a redefinition), and files
    nothing needs any more are removed. Disks are merged one at a time; if a
    merge fails, the snapshot is gone but the guest's data is whole: that
    disk just keeps a longer chain.
"""

from __future__ import annotations

import logging
import os
import time

import libvirt

from compute_driver import exception
from compute_driver.domain_xml.snapshot import DomainSnapshot
from compute_driver.virt.libvirt.snapshot_domain import _call, _parsed, _sources
from compute_driver.virt.libvirt.snapshot_model import (
    BLOCK_COMMIT_TIMEOUT,
    BLOCK_JOB_POLL,
    _chain,
    _conflict,
    _format_of,
    _homes,
    _qemu_img,
    garbage,
    revert_overlay_path,
    snapshot_files,
    state_files,
    with_disk_sources,
)

LOG = logging.getLogger(__name__)


# --- revert ----------------------------------------------------------------


def _revert_external(
    virt_dom: libvirt.virDomain,
    uuid: str,
    snap: libvirt.virDomainSnapshot,
    parsed: DomainSnapshot,
) -> None:
    name = parsed.name or ""
    if virt_dom.isActive():
        raise _conflict(
            "revert to",
            name,
            uuid,
            "an external snapshot can only be reverted while the server is stopped; stop it first",
        )
    states = state_files(parsed)
    current = _sources(virt_dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
    for dev, state in states.items():
        why = None
        if dev not in current:
            why = f"disk {dev} has been detached since"
        elif os.path.dirname(current[dev]) != os.path.dirname(state):
            why = f"disk {dev} has moved to another directory since"
        elif not os.path.exists(state):
            why = f"its file {state} is missing"
        if why:
            raise _conflict("revert to", name, uuid, why)
    before = _all_files(virt_dom, uuid, current)
    made: dict[str, str] = {}
    try:
        for dev, state in states.items():
            made[dev] = revert_overlay_path(state, name)
            _qemu_img(
                uuid,
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                _format_of(uuid, state),
                "-b",
                state,
                made[dev],
            )
        xml = _call(
            uuid,
            "snapshot_revert",
            virt_dom.XMLDesc,
            libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE,
        )
        _call(uuid, "snapshot_revert", virt_dom.connect().defineXML, with_disk_sources(xml, made))
    except BaseException:
        for path in made.values():
            if os.path.lexists(path):
                os.unlink(path)
        raise
    _make_current(virt_dom, uuid, snap)
    _collect_garbage(virt_dom, uuid, before, current)


def _make_current(virt_dom: libvirt.virDomain, uuid: str, snap: libvirt.virDomainSnapshot) -> None:
    """Mark ``snap`` as the current snapshot (the parent of the next one)."""
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    try:
        virt_dom.snapshotCreateXML(snap.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE), flags)
    except libvirt.libvirtError as exc:
        # NOTE: the disks are already reverted; only the tree's notion of
        # "current" is off, which changes the parent of the next snapshot.
        LOG.warning(
            "Server %s: could not make snapshot %s current: %s",
            uuid,
            snap.getName(),
            exc.get_error_message(),
        )


# --- delete ----------------------------------------------------------------


def _delete_external(
    virt_dom: libvirt.virDomain,
    uuid: str,
    snap: libvirt.virDomainSnapshot,
    parsed: DomainSnapshot,
) -> None:
    name = parsed.name or ""
    children = [s.name for s in _parsed(virt_dom, uuid) if s.parent == name]
    if children:
        raise _conflict(
            "delete",
            name,
            uuid,
            "it has child snapshots (%s); delete them first" % ", ".join(map(str, children)),
        )
    running = bool(virt_dom.isActive())
    current = _sources(virt_dom, 0)
    merges: list[tuple[str, str, str]] = []
    for dev, state in state_files(parsed).items():
        top = current.get(dev)
        chain = _chain(uuid, top) if top else []
        if state not in chain or chain.index(state) == 0:
            continue  # nothing above the state file to merge into it
        if chain.index(state) != 1:
            raise _conflict(
                "delete",
                name,
                uuid,
                f"disk {dev}: {chain[chain.index(state) - 1]} lies between the "
                "snapshot and the disk's top",
            )
        merges.append((dev, top or "", state))
    before = _all_files(virt_dom, uuid, current)
    _call(uuid, "snapshot_delete", snap.delete, libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
    merged: dict[str, str] = {}
    for dev, top, state in merges:
        if running:
            _block_commit(virt_dom, uuid, dev, state)
        else:
            _qemu_img(uuid, "commit", "-q", top)
            merged[dev] = state
    if merged:
        xml = _call(
            uuid,
            "snapshot_delete",
            virt_dom.XMLDesc,
            libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE,
        )
        _call(
            uuid,
            "snapshot_delete",
            virt_dom.connect().defineXML,
            with_disk_sources(xml, merged),
        )
    _collect_garbage(virt_dom, uuid, before, current)


def _block_commit(virt_dom: libvirt.virDomain, uuid: str, dev: str, base_file: str) -> None:
    """Merge the active layer of disk ``dev`` down into ``base_file`` and pivot to it."""
    _call(
        uuid,
        "snapshot_delete",
        virt_dom.blockCommit,
        dev,
        base_file,
        None,
        0,
        libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE,
    )
    deadline = time.monotonic() + BLOCK_COMMIT_TIMEOUT
    while time.monotonic() < deadline:
        info = _call(uuid, "snapshot_delete", virt_dom.blockJobInfo, dev, 0)
        if not info:
            raise exception.VirtError(
                operation="snapshot_delete",
                instance=uuid,
                reason=f"the merge of disk {dev} ended before it could be completed",
            )
        if info["cur"] == info["end"]:
            try:
                virt_dom.blockJobAbort(dev, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                return
            except libvirt.libvirtError as exc:
                # NOTE: cur == end can show before QEMU declares the job
                # ready; a pivot then is refused, and we look again.
                if exc.get_error_code() not in (
                    libvirt.VIR_ERR_BLOCK_COPY_ACTIVE,
                    libvirt.VIR_ERR_OPERATION_INVALID,
                ):
                    raise exception.VirtError(
                        operation="snapshot_delete",
                        instance=uuid,
                        reason=exc.get_error_message(),
                    ) from exc
        time.sleep(BLOCK_JOB_POLL)
    try:
        virt_dom.blockJobAbort(dev, 0)
    except libvirt.libvirtError:
        LOG.warning("Server %s: could not cancel the merge of disk %s", uuid, dev)
    raise exception.VirtError(
        operation="snapshot_delete",
        instance=uuid,
        reason=f"the merge of disk {dev} took more than {BLOCK_COMMIT_TIMEOUT} s",
    )


# --- the files -------------------------------------------------------------


def _all_files(virt_dom: libvirt.virDomain, uuid: str, current: dict[str, str]) -> set[str]:
    """Every file of the disks' chains and of every snapshot of the domain."""
    files: set[str] = set()
    for top in current.values():
        files.update(_chain(uuid, top))
    for snapshot in _parsed(virt_dom, uuid):
        files.update(snapshot_files(snapshot))
    return files


def _collect_garbage(
    virt_dom: libvirt.virDomain,
    uuid: str,
    candidates: set[str],
    old_sources: dict[str, str],
) -> None:
    """Remove our overlays that neither the disks nor any snapshot still need."""
    current = _sources(virt_dom, 0)
    keep: set[str] = set()
    for top in current.values():
        keep.update(_chain(uuid, top))
    for snapshot in _parsed(virt_dom, uuid):
        for state in state_files(snapshot).values():
            keep.update(_chain(uuid, state))
    homes = _homes(old_sources) | _homes(current)
    for path in garbage(candidates, keep, homes):
        if os.path.lexists(path):
            LOG.info("Removing %s of server %s: no disk or snapshot needs it", path, uuid)
            os.unlink(path)
