"""Server snapshots on libvirt: internal (inside qcow2) and external (overlay files).

Kinds
    ``internal``: a libvirt snapshot inside every qcow2 disk. Of a running
    server it saves disks and memory (QEMU pauses the guest while it saves);
    of a stopped one, disks only. Revert is libvirt's ``revertToSnapshot``: the
    server comes back running when memory was saved, stopped otherwise.
    Delete removes the snapshot from the qcow2 files; libvirt re-parents its
    children.

    ``external``: disks only (``VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY``), of a
    running or a stopped server. Each disk gets a new qcow2 overlay next to it,
    ``<volume>.snap-<name>.qcow2``, and the file under it is frozen: that file
    is the snapshot's *state file*, read back from the ``<domain>`` that
    libvirt stores in the snapshot.

Rules for every snapshot
    Always ``VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC``. CD-ROMs (the config drive),
    floppies and read-only disks are excluded (``snapshot='no'``); every other
    disk must be a local qcow2 file, or the snapshot is refused. A server
    keeps snapshots of one kind only: once its disks have external overlays,
    the internal snapshots sit in files that are no longer the disks' tops,
    and libvirt 9.0 can neither revert nor delete them there. Nothing changes
    on a suspended server: its saved memory belongs to the disks as they are.

Quiesce (freezing the guest's file systems through the QEMU guest agent)
    Whenever it helps and the agent is there: an external snapshot of a
    running server whose agent channel libvirt reports ``connected`` is
    taken with ``VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE``. libvirt freezes before
    it changes any disk and thaws afterwards in libvirtd itself, so a crash of
    this process never leaves a guest frozen; after a failed quiesced attempt
    we ask for a thaw once more anyway. Without the agent (no channel, or
    nothing listening on it) the snapshot is taken as it is, crash-consistent.
    Internal snapshots are never quiesced: of a running server they save its
    memory, which already holds whatever the disks lack; a freeze around one
    would save a frozen guest, and a revert would bring it back frozen. Of a
    stopped server there is nothing to freeze.

    Quiesce is *required* when the caller asks for it (``quiesce=True``: only
    for an external snapshot of a running server) or the image says so
    (``os_require_quiesce=yes``, passed in as ``require_quiesce``: for every
    snapshot of a running server; a stopped one is snapshotted as it is). A
    required quiesce that cannot happen (no agent, or it does not answer)
    refuses the snapshot with SnapshotConflict, before anything changed; one
    that is not required falls back to a snapshot without it. Whether each
    snapshot was quiesced is kept in the domain's metadata (our element
    ``<cdsnap:snapshots>``) and read by :meth:`SnapshotManager.quiesced`.

External revert and delete
    Only a stopped server's disks are reverted (libvirt 9.0 has no external
    revert), and a snapshot with children is not deleted; how both are done
    is in :mod:`.snapshot_external`.

Files
    We only ever create or remove files named ``<stem>.snap-*.qcow2`` or
    ``<stem>.revert-*.qcow2`` in the directory of the disk whose volume file
    is ``<stem>.qcow2``; the storage backend's volume files and the image
    cache are never written by name here. A failed create removes any overlay
    it made. :meth:`SnapshotManager.purge` removes all of them before a
    server is undefined.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.domain_xml.snapshot import DomainSnapshot
from compute_driver.virt import base
from compute_driver.virt.libvirt.snapshot_domain import (
    _call,
    _lookup,
    _parse,
    _parsed,
    _read_quiesced,
    _record_quiesced,
    _refuse_suspended,
    _sources,
)
from compute_driver.virt.libvirt.snapshot_external import (
    _all_files,
    _delete_external,
    _revert_external,
)
from compute_driver.virt.libvirt.snapshot_model import (
    AGENT_ABSENT,
    AGENT_CHANNEL,
    AGENT_CONNECTED,
    AGENT_DISCONNECTED,
    BLOCK_COMMIT_TIMEOUT,
    BLOCK_JOB_POLL,
    DESCRIPTION_MAX,
    NAME_RE,
    QEMU_IMG_TIMEOUT,
    QUIESCE_METADATA_NAMESPACE,
    QUIESCE_METADATA_PREFIX,
    REQUIRE_QUIESCE_PROPERTY,
    QuiescePlan,
    _check_description,
    _conflict,
    _homes,
    _is_agent_error,
    _quiesce_needs_external,
    agent_state,
    check_name,
    created_at,
    garbage,
    image_requires_quiesce,
    infos,
    is_ours,
    overlay_path,
    plan_disks,
    plan_quiesce,
    quiesced_from_xml,
    quiesced_to_xml,
    revert_overlay_path,
    snapshot_files,
    state_files,
    stem_of,
    with_disk_sources,
)

# NOTE: the names of the snapshot model stay reachable here (the driver and the tests).
__all__ = [
    "AGENT_ABSENT",
    "AGENT_CONNECTED",
    "AGENT_DISCONNECTED",
    "AGENT_CHANNEL",
    "agent_state",
    "BLOCK_COMMIT_TIMEOUT",
    "BLOCK_JOB_POLL",
    "check_name",
    "created_at",
    "DESCRIPTION_MAX",
    "garbage",
    "image_requires_quiesce",
    "infos",
    "is_ours",
    "NAME_RE",
    "overlay_path",
    "plan_disks",
    "plan_quiesce",
    "QEMU_IMG_TIMEOUT",
    "QUIESCE_METADATA_NAMESPACE",
    "QUIESCE_METADATA_PREFIX",
    "quiesced_from_xml",
    "quiesced_to_xml",
    "QuiescePlan",
    "REQUIRE_QUIESCE_PROPERTY",
    "revert_overlay_path",
    "snapshot_files",
    "SnapshotManager",
    "state_files",
    "stem_of",
    "with_disk_sources",
]

LOG = logging.getLogger(__name__)


class SnapshotManager:
    """Creates, lists, reverts and deletes the snapshots of libvirt domains.

    One operation at a time per server; the domain (``virt_dom``) is looked up
    and checked to be ours by the caller.
    """

    def __init__(self, max_per_instance: int) -> None:
        self.max_per_instance = max_per_instance
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @contextmanager
    def _locked(self, uuid: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(uuid, threading.Lock())
        with lock:
            yield

    # --- create ----------------------------------------------------------------

    def create(
        self,
        virt_dom: libvirt.virDomain,
        uuid: str,
        name: str,
        kind: str,
        quiesce: bool = False,
        description: str = "",
        *,
        require_quiesce: bool = False,
    ) -> base.SnapshotInfo:
        """Take a snapshot; quiesced whenever the guest agent is there (module doc).

        :param quiesce: the caller requires a quiesced snapshot.
        :param require_quiesce: the image requires one (``os_require_quiesce``;
            see :func:`image_requires_quiesce`).
        """
        check_name(uuid, name)
        if kind not in base.SNAPSHOT_KINDS:
            raise exception.InvalidSnapshot(
                name=name, instance=uuid, reason=f"kind {kind!r} is not internal or external"
            )
        _check_description(uuid, name, description)
        if quiesce and kind != "external":
            raise _quiesce_needs_external(uuid, name)
        with self._locked(uuid):
            return self._create(virt_dom, uuid, name, kind, quiesce, require_quiesce, description)

    def _create(
        self,
        virt_dom: libvirt.virDomain,
        uuid: str,
        name: str,
        kind: str,
        quiesce: bool,
        require_quiesce: bool,
        description: str,
    ) -> base.SnapshotInfo:
        _refuse_suspended(virt_dom, uuid, "create", name)
        existing = _parsed(virt_dom, uuid)
        if any(s.name == name for s in existing):
            raise exception.SnapshotExists(instance=uuid, name=name)
        if len(existing) >= self.max_per_instance:
            raise exception.SnapshotLimitReached(
                instance=uuid, count=len(existing), limit=self.max_per_instance
            )
        other = {s.kind for s in existing} - {kind}
        if other:
            raise _conflict(
                "create",
                name,
                uuid,
                f"the server has {other.pop()} snapshots, and one server keeps "
                "one kind only; delete them first",
            )
        running = bool(virt_dom.isActive())
        domain_xml = _call(uuid, "snapshot_create", virt_dom.XMLDesc, 0)
        domain = lvxml.Domain.parse(domain_xml)
        plan = plan_quiesce(
            uuid, name, kind, running, agent_state(domain_xml), quiesce, require_quiesce
        )
        disks = plan_disks(uuid, name, kind, domain)
        overlays = [d.source_file for d in disks if d.source_file]
        for path in overlays:
            if os.path.lexists(path):
                raise _conflict("create", name, uuid, f"{path} already exists")
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        if kind == "external":
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            memory = None
        else:
            memory = "internal" if running else "no"
        request = DomainSnapshot(
            name=name, description=description or None, memory=memory, disks=disks
        )
        xml = request.to_string()
        LOG.debug("Creating snapshot %s of %s:\n%s", name, uuid, xml)
        quiesced = plan.quiesce
        snap: libvirt.virDomainSnapshot | None = None
        try:
            if plan.quiesce:
                snap = self._create_quiesced(virt_dom, uuid, name, xml, flags, plan, overlays)
                quiesced = snap is not None
            if snap is None:
                snap = virt_dom.snapshotCreateXML(xml, flags)
        except libvirt.libvirtError as exc:
            self._remove_unused_overlays(virt_dom, overlays)
            raise exception.VirtError(
                operation="snapshot_create", instance=uuid, reason=exc.get_error_message()
            ) from exc
        LOG.info(
            "Created %s snapshot %s of server %s (%s)",
            kind,
            name,
            uuid,
            "quiesced" if quiesced else "not quiesced",
        )
        _record_quiesced(virt_dom, uuid, name, quiesced)
        return infos([_parse(uuid, snap)], {name: quiesced})[0]

    def _create_quiesced(
        self,
        virt_dom: libvirt.virDomain,
        uuid: str,
        name: str,
        xml: str,
        flags: int,
        plan: QuiescePlan,
        overlays: list[str],
    ) -> libvirt.virDomainSnapshot | None:
        """Try the snapshot with libvirt's quiesce; None: take it without (not strict).

        :raises SnapshotConflict: strict, and the guest agent failed; nothing changed.
        :raises libvirtError: the snapshot failed for another reason.
        """
        try:
            return virt_dom.snapshotCreateXML(
                xml, flags | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
            )
        except libvirt.libvirtError as exc:
            # NOTE: libvirt thaws after a freeze, but when the snapshot failed
            # it does not say whether that thaw worked: ask once more. The
            # agent answers 0 when nothing is frozen.
            self._thaw(virt_dom, uuid)
            if not _is_agent_error(exc) or not self._unchanged(virt_dom, name, overlays):
                raise
            message = exc.get_error_message()
        if plan.strict:
            self._remove_unused_overlays(virt_dom, overlays)
            raise _conflict(
                "create",
                name,
                uuid,
                f"the guest agent could not freeze the file systems ({message}); "
                "nothing was changed",
            )
        LOG.warning(
            "Server %s: the guest agent could not freeze the file systems (%s); "
            "taking snapshot %s without quiesce",
            uuid,
            message,
            name,
        )
        return None

    @staticmethod
    def _thaw(virt_dom: libvirt.virDomain, uuid: str) -> None:
        try:
            virt_dom.fsThaw(None, 0)
        except libvirt.libvirtError as exc:
            LOG.warning(
                "Server %s: could not make sure the guest is thawed: %s",
                uuid,
                exc.get_error_message(),
            )

    def _unchanged(self, virt_dom: libvirt.virDomain, name: str, overlays: list[str]) -> bool:
        """True if a failed create left no trace: no snapshot ``name``, no disk on our overlays."""
        try:
            virt_dom.snapshotLookupByName(name, 0)
            return False
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                return False
        try:
            in_use = set(_sources(virt_dom, 0).values())
        except libvirt.libvirtError:
            return False
        return not in_use.intersection(overlays)

    def _remove_unused_overlays(self, virt_dom: libvirt.virDomain, overlays: list[str]) -> None:
        """After a failed create: remove the overlays no disk has switched to."""
        try:
            in_use = set(_sources(virt_dom, 0).values())
        except libvirt.libvirtError:
            in_use = set(overlays)  # NOTE: unsure what the domain uses: remove nothing.
        for path in overlays:
            if path not in in_use and os.path.lexists(path):
                LOG.info("Removing %s, left by a failed snapshot", path)
                os.unlink(path)

    # --- list ------------------------------------------------------------------

    def list_snapshots(self, virt_dom: libvirt.virDomain, uuid: str) -> list[base.SnapshotInfo]:
        return infos(_parsed(virt_dom, uuid), _read_quiesced(virt_dom, uuid))

    def quiesced(self, virt_dom: libvirt.virDomain, uuid: str) -> dict[str, bool]:
        """``{snapshot name: whether the guest agent froze the file systems for it}``."""
        records = _read_quiesced(virt_dom, uuid)
        return {s.name: records.get(s.name, False) for s in _parsed(virt_dom, uuid) if s.name}

    # --- revert ----------------------------------------------------------------

    def revert(self, virt_dom: libvirt.virDomain, uuid: str, name: str) -> None:
        with self._locked(uuid):
            snap = _lookup(virt_dom, uuid, name)
            parsed = _parse(uuid, snap)
            _refuse_suspended(virt_dom, uuid, "revert to", name)
            if parsed.kind == "internal":
                _call(uuid, "snapshot_revert", virt_dom.revertToSnapshot, snap, 0)
            else:
                _revert_external(virt_dom, uuid, snap, parsed)
        LOG.info("Reverted server %s to snapshot %s", uuid, name)

    # --- delete ----------------------------------------------------------------

    def delete(self, virt_dom: libvirt.virDomain, uuid: str, name: str) -> None:
        with self._locked(uuid):
            snap = _lookup(virt_dom, uuid, name)
            parsed = _parse(uuid, snap)
            _refuse_suspended(virt_dom, uuid, "delete", name)
            if parsed.kind == "internal":
                _call(uuid, "snapshot_delete", snap.delete, 0)
            else:
                _delete_external(virt_dom, uuid, snap, parsed)
            _record_quiesced(virt_dom, uuid, name, None)
        LOG.info("Deleted snapshot %s of server %s", name, uuid)

    # --- purge -----------------------------------------------------------------

    def purge(self, virt_dom: libvirt.virDomain, uuid: str) -> None:
        """Forget every snapshot of a stopped server and remove every overlay we made.

        For a server about to be undefined: afterwards its disks may point at
        files that are gone. The storage backend's volume files stay.

        :raises SnapshotConflict: the server is running.
        """
        with self._locked(uuid):
            if virt_dom.isActive():
                raise _conflict("purge", "(all)", uuid, "the server is running")
            current = _sources(virt_dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
            try:
                files = _all_files(virt_dom, uuid, current)
            except exception.VirtError as exc:
                # NOTE: purge runs on the way to undefining the domain; an
                # unreadable file must not keep it defined.
                LOG.warning("Server %s: cannot list every snapshot file: %s", uuid, exc)
                files = set(current.values())
            for snap in virt_dom.listAllSnapshots(0):
                try:
                    snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                        raise exception.VirtError(
                            operation="snapshot_purge",
                            instance=uuid,
                            reason=exc.get_error_message(),
                        ) from exc
                    # NOTE: a driver without metadata-only deletion (libvirt's
                    # test driver) keeps no files to forget either.
                    _call(uuid, "snapshot_purge", snap.delete, 0)
            for path in garbage(files, set(), _homes(current)):
                if os.path.lexists(path):
                    LOG.info("Removing snapshot file %s of server %s", path, uuid)
                    os.unlink(path)
