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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import libvirt

from compute_driver import exception
from compute_driver.virt import base
from compute_driver.virt.libvirt import xml as lvxml
from compute_driver.virt.libvirt.snapshot_model import (
    _EXCLUDED_DEVICES,
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
    _chain,
    _check_description,
    _conflict,
    _format_of,
    _homes,
    _is_agent_error,
    _qemu_img,
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
from compute_driver.virt.libvirt.xml.base import XMLBuilderError
from compute_driver.virt.libvirt.xml.snapshot import DomainSnapshot

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
        self._refuse_suspended(virt_dom, uuid, "create", name)
        existing = self._parsed(virt_dom, uuid)
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
        domain_xml = self._call(uuid, "snapshot_create", virt_dom.XMLDesc, 0)
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
        self._record_quiesced(virt_dom, uuid, name, quiesced)
        return infos([self._parse(uuid, snap)], {name: quiesced})[0]

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
            in_use = set(self._sources(virt_dom, 0).values())
        except libvirt.libvirtError:
            return False
        return not in_use.intersection(overlays)

    def _remove_unused_overlays(self, virt_dom: libvirt.virDomain, overlays: list[str]) -> None:
        """After a failed create: remove the overlays no disk has switched to."""
        try:
            in_use = set(self._sources(virt_dom, 0).values())
        except libvirt.libvirtError:
            in_use = set(overlays)  # NOTE: unsure what the domain uses: remove nothing.
        for path in overlays:
            if path not in in_use and os.path.lexists(path):
                LOG.info("Removing %s, left by a failed snapshot", path)
                os.unlink(path)

    # --- list ------------------------------------------------------------------

    def list_snapshots(self, virt_dom: libvirt.virDomain, uuid: str) -> list[base.SnapshotInfo]:
        return infos(self._parsed(virt_dom, uuid), self._read_quiesced(virt_dom, uuid))

    def quiesced(self, virt_dom: libvirt.virDomain, uuid: str) -> dict[str, bool]:
        """``{snapshot name: whether the guest agent froze the file systems for it}``."""
        records = self._read_quiesced(virt_dom, uuid)
        return {s.name: records.get(s.name, False) for s in self._parsed(virt_dom, uuid) if s.name}

    # --- the quiesce record (domain metadata) ----------------------------------

    @staticmethod
    def _read_quiesced(virt_dom: libvirt.virDomain, uuid: str) -> dict[str, bool]:
        try:
            text = virt_dom.metadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, QUIESCE_METADATA_NAMESPACE, 0
            )
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
        self, virt_dom: libvirt.virDomain, uuid: str, name: str, quiesced: bool | None
    ) -> None:
        """Set (or, with None, drop) the record of ``name``; records of gone snapshots go too.

        NOTE: a failure is only logged: the snapshot itself is done, and a
        missing record reads as "not quiesced", never the other way round.
        """
        try:
            existing = {s.name for s in self._parsed(virt_dom, uuid)}
            records = {
                n: q for n, q in self._read_quiesced(virt_dom, uuid).items() if n in existing
            }
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

    # --- revert ----------------------------------------------------------------

    def revert(self, virt_dom: libvirt.virDomain, uuid: str, name: str) -> None:
        with self._locked(uuid):
            snap = self._lookup(virt_dom, uuid, name)
            parsed = self._parse(uuid, snap)
            self._refuse_suspended(virt_dom, uuid, "revert to", name)
            if parsed.kind == "internal":
                self._call(uuid, "snapshot_revert", virt_dom.revertToSnapshot, snap, 0)
            else:
                self._revert_external(virt_dom, uuid, snap, parsed)
        LOG.info("Reverted server %s to snapshot %s", uuid, name)

    def _revert_external(
        self,
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
                "an external snapshot can only be reverted while the server is "
                "stopped; stop it first",
            )
        states = state_files(parsed)
        current = self._sources(virt_dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
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
        before = self._all_files(virt_dom, uuid, current)
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
            xml = self._call(
                uuid,
                "snapshot_revert",
                virt_dom.XMLDesc,
                libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE,
            )
            self._call(
                uuid, "snapshot_revert", virt_dom.connect().defineXML, with_disk_sources(xml, made)
            )
        except BaseException:
            for path in made.values():
                if os.path.lexists(path):
                    os.unlink(path)
            raise
        self._make_current(virt_dom, uuid, snap)
        self._collect_garbage(virt_dom, uuid, before, current)

    def _make_current(
        self, virt_dom: libvirt.virDomain, uuid: str, snap: libvirt.virDomainSnapshot
    ) -> None:
        """Mark ``snap`` as the current snapshot (the parent of the next one)."""
        flags = (
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
        )
        try:
            virt_dom.snapshotCreateXML(
                snap.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE), flags
            )
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

    def delete(self, virt_dom: libvirt.virDomain, uuid: str, name: str) -> None:
        with self._locked(uuid):
            snap = self._lookup(virt_dom, uuid, name)
            parsed = self._parse(uuid, snap)
            self._refuse_suspended(virt_dom, uuid, "delete", name)
            if parsed.kind == "internal":
                self._call(uuid, "snapshot_delete", snap.delete, 0)
            else:
                self._delete_external(virt_dom, uuid, snap, parsed)
            self._record_quiesced(virt_dom, uuid, name, None)
        LOG.info("Deleted snapshot %s of server %s", name, uuid)

    def _delete_external(
        self,
        virt_dom: libvirt.virDomain,
        uuid: str,
        snap: libvirt.virDomainSnapshot,
        parsed: DomainSnapshot,
    ) -> None:
        name = parsed.name or ""
        children = [s.name for s in self._parsed(virt_dom, uuid) if s.parent == name]
        if children:
            raise _conflict(
                "delete",
                name,
                uuid,
                "it has child snapshots (%s); delete them first" % ", ".join(map(str, children)),
            )
        running = bool(virt_dom.isActive())
        current = self._sources(virt_dom, 0)
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
        before = self._all_files(virt_dom, uuid, current)
        self._call(
            uuid, "snapshot_delete", snap.delete, libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY
        )
        merged: dict[str, str] = {}
        for dev, top, state in merges:
            if running:
                self._block_commit(virt_dom, uuid, dev, state)
            else:
                _qemu_img(uuid, "commit", "-q", top)
                merged[dev] = state
        if merged:
            xml = self._call(
                uuid,
                "snapshot_delete",
                virt_dom.XMLDesc,
                libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE,
            )
            self._call(
                uuid,
                "snapshot_delete",
                virt_dom.connect().defineXML,
                with_disk_sources(xml, merged),
            )
        self._collect_garbage(virt_dom, uuid, before, current)

    def _block_commit(
        self, virt_dom: libvirt.virDomain, uuid: str, dev: str, base_file: str
    ) -> None:
        """Merge the active layer of disk ``dev`` down into ``base_file`` and pivot to it."""
        self._call(
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
            info = self._call(uuid, "snapshot_delete", virt_dom.blockJobInfo, dev, 0)
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
            current = self._sources(virt_dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
            try:
                files = self._all_files(virt_dom, uuid, current)
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
                    self._call(uuid, "snapshot_purge", snap.delete, 0)
            for path in garbage(files, set(), _homes(current)):
                if os.path.lexists(path):
                    LOG.info("Removing snapshot file %s of server %s", path, uuid)
                    os.unlink(path)

    # --- helpers ---------------------------------------------------------------

    @staticmethod
    def _call(uuid: str, operation: str, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except libvirt.libvirtError as exc:
            raise exception.VirtError(
                operation=operation, instance=uuid, reason=exc.get_error_message()
            ) from exc

    def _lookup(
        self, virt_dom: libvirt.virDomain, uuid: str, name: str
    ) -> libvirt.virDomainSnapshot:
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

    def _parse(self, uuid: str, snap: libvirt.virDomainSnapshot) -> DomainSnapshot:
        return DomainSnapshot.parse(self._call(uuid, "snapshot_list", snap.getXMLDesc, 0))

    def _parsed(self, virt_dom: libvirt.virDomain, uuid: str) -> list[DomainSnapshot]:
        snaps = self._call(
            uuid,
            "snapshot_list",
            virt_dom.listAllSnapshots,
            libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL,
        )
        return [self._parse(uuid, snap) for snap in snaps]

    @staticmethod
    def _refuse_suspended(virt_dom: libvirt.virDomain, uuid: str, action: str, name: str) -> None:
        if not virt_dom.isActive() and virt_dom.hasManagedSaveImage(0):
            raise _conflict(
                action,
                name,
                uuid,
                "the server is suspended (its saved memory belongs to the disks as "
                "they are); resume it first",
            )

    @staticmethod
    def _sources(virt_dom: libvirt.virDomain, flags: int) -> dict[str, str]:
        """``{target dev: file}`` of the domain's local file disks, CD-ROMs excluded."""
        domain = lvxml.Domain.parse(virt_dom.XMLDesc(flags))
        return {
            d.target_dev: d.source_file
            for d in domain.devices_of(lvxml.Disk)
            if d.target_dev and d.source_file and d.device not in _EXCLUDED_DEVICES
        }

    def _all_files(
        self, virt_dom: libvirt.virDomain, uuid: str, current: dict[str, str]
    ) -> set[str]:
        """Every file of the disks' chains and of every snapshot of the domain."""
        files: set[str] = set()
        for top in current.values():
            files.update(_chain(uuid, top))
        for snapshot in self._parsed(virt_dom, uuid):
            files.update(snapshot_files(snapshot))
        return files

    def _collect_garbage(
        self,
        virt_dom: libvirt.virDomain,
        uuid: str,
        candidates: set[str],
        old_sources: dict[str, str],
    ) -> None:
        """Remove our overlays that neither the disks nor any snapshot still need."""
        current = self._sources(virt_dom, 0)
        keep: set[str] = set()
        for top in current.values():
            keep.update(_chain(uuid, top))
        for snapshot in self._parsed(virt_dom, uuid):
            for state in state_files(snapshot).values():
                keep.update(_chain(uuid, state))
        homes = _homes(old_sources) | _homes(current)
        for path in garbage(candidates, keep, homes):
            if os.path.lexists(path):
                LOG.info("Removing %s of server %s: no disk or snapshot needs it", path, uuid)
                os.unlink(path)
