"""What snapshots are made of, apart from libvirt calls: names, files and plans.

The rules of :mod:`.snapshots` as pure functions (which disks a snapshot
takes and how, whether it is quiesced, where overlays go and which files
are ours to remove) and the reads of image files (backing chains). The
:class:`~compute_driver.virt.libvirt.snapshots.SnapshotManager` applies them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import libvirt
from lxml import etree

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.disk_image import qcow2, qemu_img
from compute_driver.domain_xml.base import parse_xml
from compute_driver.domain_xml.snapshot import DomainSnapshot, SnapshotDisk
from compute_driver.virt import base

LOG = logging.getLogger(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DESCRIPTION_MAX = 255
AGENT_CHANNEL = "org.qemu.guest_agent.0"
#: What libvirt says of the agent channel (``<target state=...>``), or that there is none.
AGENT_ABSENT, AGENT_DISCONNECTED, AGENT_CONNECTED = "absent", "disconnected", "connected"
#: The image property (Nova's name) that makes every snapshot of a running server quiesced.
REQUIRE_QUIESCE_PROPERTY = "os_require_quiesce"
#: Our element in the domain's <metadata>: which snapshots were quiesced.
QUIESCE_METADATA_NAMESPACE = "https://compute-driver.dev/xmlns/snapshots/1.0"
QUIESCE_METADATA_PREFIX = "cdsnap"
#: libvirt errors of the guest agent (newer libvirt has more codes than 9.0).
_AGENT_ERRORS = frozenset(
    code
    for code in (
        getattr(libvirt, attr, None)
        for attr in (
            "VIR_ERR_AGENT_UNRESPONSIVE",
            "VIR_ERR_AGENT_UNSYNCED",
            "VIR_ERR_AGENT_COMMAND_TIMEOUT",
            "VIR_ERR_AGENT_COMMAND_FAILED",
        )
    )
    if code is not None
)
_TRUE_WORDS = ("yes", "true", "1")
_FALSE_WORDS = ("no", "false", "0")
QEMU_IMG_TIMEOUT = 600
#: Seconds a live merge (block commit) may take before it is cancelled.
BLOCK_COMMIT_TIMEOUT = 600
BLOCK_JOB_POLL = 0.2
_EXCLUDED_DEVICES = ("cdrom", "floppy")


def check_name(instance: str, name: Any) -> str:
    """Return ``name`` if it is a valid snapshot name.

    :raises InvalidSnapshot: not 1-64 of letters, digits, '-', '_', '.',
        starting with a letter or digit, or containing '..'.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise exception.InvalidSnapshot(
            name=name,
            instance=instance,
            reason="use 1-64 letters, digits, '-', '_' and '.', starting with a "
            "letter or digit, without '..'",
        )
    return name


def _check_description(instance: str, name: str, description: Any) -> str:
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
        raise exception.InvalidSnapshot(
            name=name, instance=instance, reason="description: at most 255 characters"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in description):
        raise exception.InvalidSnapshot(
            name=name, instance=instance, reason="description: no control characters"
        )
    return description


def stem_of(path: str) -> str:
    """The volume name a disk file belongs to: ``/d/vol.snap-x.qcow2`` -> ``vol``."""
    return os.path.basename(path).split(".", 1)[0]


def overlay_path(disk_file: str, name: str) -> str:
    """Where an external snapshot ``name`` puts the overlay of the disk now at ``disk_file``."""
    return os.path.join(os.path.dirname(disk_file), f"{stem_of(disk_file)}.snap-{name}.qcow2")


def revert_overlay_path(state_file: str, name: str) -> str:
    """A new, unique overlay for reverting to snapshot ``name`` over ``state_file``."""
    return os.path.join(
        os.path.dirname(state_file),
        f"{stem_of(state_file)}.revert-{name}-{secrets.token_hex(4)}.qcow2",
    )


def is_ours(path: str, homes: set[tuple[str, str]]) -> bool:
    """True for an overlay this module made for a disk at home ``(directory, stem)``."""
    directory, base_name = os.path.split(path)
    for home_dir, stem in homes:
        if directory == home_dir and base_name.endswith(".qcow2"):
            if base_name.startswith((stem + ".snap-", stem + ".revert-")):
                return True
    return False


def garbage(candidates: set[str], keep: set[str], homes: set[tuple[str, str]]) -> list[str]:
    """The files to remove: ``candidates`` nothing keeps, made by us (sorted)."""
    return sorted(p for p in candidates - keep if is_ours(p, homes))


def created_at(creation_time: int | None) -> str:
    """libvirt's creation time (seconds) as ISO 8601 UTC."""
    moment = datetime.fromtimestamp(creation_time or 0, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def with_disk_sources(domain_xml: str, sources: dict[str, str]) -> str:
    """``domain_xml`` with the disks of target dev ``sources`` pointing at new files.

    NOTE: edits libvirt's own document instead of round-tripping it through
    ``lvxml.Domain``: the builders skip what they do not declare (addresses,
    controllers...), and a redefinition must keep all of it. The old
    ``<backingStore>`` goes too: libvirt reads the new chain from the files.
    """
    root = parse_xml(domain_xml)
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if dev not in sources:
            continue
        source = disk.find("source")
        if source is None:
            source = etree.SubElement(disk, "source")
        source.set("file", sources[dev])
        for backing in disk.findall("backingStore"):
            disk.remove(backing)
    return etree.tostring(root, encoding="unicode")


def plan_disks(instance: str, name: str, kind: str, domain: lvxml.Domain) -> list[SnapshotDisk]:
    """The ``<disks>`` of a snapshot request for the disks of ``domain``.

    :raises SnapshotConflict: a disk that must be snapshotted is not a local
        qcow2 file, or there is no such disk at all.
    """
    planned: list[SnapshotDisk] = []
    for disk in domain.devices_of(lvxml.Disk):
        dev = disk.target_dev or ""
        if disk.device in _EXCLUDED_DEVICES or disk.readonly:
            planned.append(SnapshotDisk(name=dev, snapshot="no"))
            continue
        if disk.type != "file" or disk.driver_type != "qcow2" or not disk.source_file:
            raise _conflict(
                "create",
                name,
                instance,
                f"disk {dev} is {disk.type}/{disk.driver_type}: only local qcow2 files "
                "can be snapshotted",
            )
        if disk.shareable:
            raise _conflict(
                "create",
                name,
                instance,
                f"disk {dev} is shareable: another guest may be writing it",
            )
        if kind == "external":
            planned.append(
                SnapshotDisk(
                    name=dev,
                    snapshot="external",
                    type="file",
                    driver_type="qcow2",
                    source_file=overlay_path(disk.source_file, name),
                )
            )
        else:
            planned.append(SnapshotDisk(name=dev, snapshot="internal"))
    if not any(d.snapshot != "no" for d in planned):
        raise _conflict("create", name, instance, "the server has no disk to snapshot")
    return planned


def agent_state(domain_xml: str) -> str:
    """``connected``, ``disconnected`` or ``absent``: the guest agent channel of a domain.

    libvirt sets ``<target state='connected'>`` on the live domain while a
    process in the guest holds the port open. ``lvxml.Channel`` does not
    declare ``state`` (a live-only attribute), so it is read here.
    """
    for target in parse_xml(domain_xml).findall("./devices/channel/target"):
        if target.get("type") == "virtio" and target.get("name") == AGENT_CHANNEL:
            return AGENT_CONNECTED if target.get("state") == "connected" else AGENT_DISCONNECTED
    return AGENT_ABSENT


def image_requires_quiesce(properties: Mapping[str, str], image: str = "(image)") -> bool:
    """The image's ``os_require_quiesce`` (yes/no, true/false, 1/0; unset is no).

    :param image: the image's name or UUID, for the error.
    :raises InvalidImage: another value.
    """
    value = str(properties.get(REQUIRE_QUIESCE_PROPERTY, "no")).strip().lower()
    if value not in _TRUE_WORDS + _FALSE_WORDS:
        raise exception.InvalidImage(
            image=image,
            reason=f"{REQUIRE_QUIESCE_PROPERTY}={value!r}: use yes or no",
        )
    return value in _TRUE_WORDS


@dataclass(frozen=True)
class QuiescePlan:
    """How one snapshot treats the guest agent.

    ``quiesce``: ask libvirt to freeze the file systems. ``strict``: if the
    freeze fails, refuse the snapshot instead of taking it unquiesced.
    """

    quiesce: bool
    strict: bool


def plan_quiesce(
    uuid: str,
    name: str,
    kind: str,
    running: bool,
    agent: str,
    requested: bool = False,
    required: bool = False,
) -> QuiescePlan:
    """Decide whether a snapshot is quiesced, or refuse it (see the module doc).

    :param agent: :func:`agent_state` of the live domain.
    :param requested: the caller asked for ``quiesce``.
    :param required: the image has ``os_require_quiesce=yes``.
    :raises InvalidSnapshot: ``requested`` for an internal snapshot.
    :raises SnapshotConflict: a required quiesce is impossible now.
    """
    if requested and kind != "external":
        raise _quiesce_needs_external(uuid, name)
    if not running:
        if requested:
            raise _conflict(
                "create",
                name,
                uuid,
                "quiesce needs a running server (a stopped one has nothing to freeze)",
            )
        return QuiescePlan(quiesce=False, strict=False)
    strict = requested or required
    if kind != "external":
        if strict:
            raise _conflict(
                "create",
                name,
                uuid,
                f"the image requires quiesce ({REQUIRE_QUIESCE_PROPERTY}), and an internal "
                "snapshot of a running server saves its memory instead of freezing it; "
                "take an external snapshot, or stop the server first",
            )
        return QuiescePlan(quiesce=False, strict=False)
    if agent == AGENT_CONNECTED:
        return QuiescePlan(quiesce=True, strict=strict)
    if strict:
        why = "requires" if required and not requested else "needs"
        if agent == AGENT_ABSENT:
            reason = (
                f"quiesce {why} the QEMU guest agent, and the server has no "
                f"guest agent channel ({AGENT_CHANNEL})"
            )
        else:
            reason = (
                f"quiesce {why} the QEMU guest agent, and no agent is connected to "
                f"{AGENT_CHANNEL} (is qemu-ga running in the guest?)"
            )
        if required and not requested:
            reason += f"; the image sets {REQUIRE_QUIESCE_PROPERTY}"
        raise _conflict("create", name, uuid, reason)
    return QuiescePlan(quiesce=False, strict=False)


def quiesced_to_xml(records: Mapping[str, bool]) -> str:
    """Our metadata element, without namespace as ``virDomainSetMetadata`` wants it."""
    root = etree.Element("snapshots")
    for name in sorted(records):
        etree.SubElement(root, "snapshot", name=name, quiesced="yes" if records[name] else "no")
    return etree.tostring(root, encoding="unicode")


def quiesced_from_xml(text: str) -> dict[str, bool]:
    """``{snapshot name: quiesced}`` from our metadata element (namespaced or not)."""
    root = parse_xml(text)
    return {
        el.get("name", ""): el.get("quiesced") == "yes"
        for el in root
        if isinstance(el.tag, str) and etree.QName(el).localname == "snapshot" and el.get("name")
    }


def state_files(snapshot: DomainSnapshot) -> dict[str, str]:
    """``{target dev: file the external snapshot froze}``, from its stored ``<domain>``."""
    external = {d for d, mode in snapshot.disk_modes().items() if mode == "external"}
    if snapshot.domain is None:
        return {}
    return {
        disk.target_dev: disk.source_file
        for disk in snapshot.domain.devices_of(lvxml.Disk)
        if disk.target_dev in external and disk.source_file
    }


def snapshot_files(snapshot: DomainSnapshot) -> set[str]:
    """Every file an external snapshot names: its state files and its overlays."""
    overlays = {d.source_file for d in snapshot.disks if d.snapshot == "external" and d.source_file}
    return overlays | set(state_files(snapshot).values())


def infos(
    snapshots: list[DomainSnapshot], quiesced: Mapping[str, bool] | None = None
) -> list[base.SnapshotInfo]:
    """SnapshotInfo of each parsed snapshot, oldest first, children filled in;
    ``quiesced`` says which were taken with the file systems frozen.

    libvirt keeps creation times in whole seconds: ties go parents first,
    then by name, so the order is stable.
    """
    parents = {s.name: s.parent for s in snapshots}

    def depth(name: str | None) -> int:
        seen: set[str | None] = set()
        while name in parents and name not in seen:
            seen.add(name)
            name = parents[name]
        return len(seen)

    ordered = sorted(snapshots, key=lambda s: (s.creation_time or 0, depth(s.name), s.name or ""))
    children: dict[str, list[str]] = {}
    for snap in ordered:
        if snap.parent:
            children.setdefault(snap.parent, []).append(snap.name or "")
    return [
        base.SnapshotInfo(
            name=snap.name or "",
            kind=snap.kind,
            created_at=created_at(snap.creation_time),
            parent=snap.parent,
            children=tuple(children.get(snap.name or "", ())),
            state=snap.state or "",
            description=snap.description or "",
            quiesced=(quiesced or {}).get(snap.name or "", False),
        )
        for snap in ordered
    ]


def _homes(sources: dict[str, str]) -> set[tuple[str, str]]:
    return {(os.path.dirname(path), stem_of(path)) for path in sources.values()}


def _qemu_img(uuid: str, *args: str) -> str:
    """``qemu-img ARGS`` for server ``uuid``; its failures are :class:`VirtError`."""

    def error(operation: str, reason: str) -> Exception:
        return exception.VirtError(operation=operation, instance=uuid, reason=reason)

    return qemu_img.run(*args, timeout=QEMU_IMG_TIMEOUT, error=error)


def _image_info(uuid: str, path: str) -> list[dict[str, Any]]:
    # NOTE: -U (force share): the file may be open in a running QEMU.
    out = _qemu_img(uuid, "info", "-U", "--backing-chain", "--output=json", path)
    info = json.loads(out)
    return info if isinstance(info, list) else [info]


def _chain(uuid: str, top: str) -> list[str]:
    """The files of the backing chain starting at ``top`` (top first); [] if it is gone."""
    if not os.path.exists(top):
        return []
    # NOTE: read from the qcow2 headers where they are plain (a delete
    # reads every disk's chain: a qemu-img run costs ~4 ms of CPU); qemu-img
    # for anything else.
    chain = qcow2.backing_chain(top)
    if chain is not None:
        return chain
    return [layer["filename"] for layer in _image_info(uuid, top)]


def _format_of(uuid: str, path: str) -> str:
    return str(_image_info(uuid, path)[0]["format"])


def _conflict(action: str, name: str, uuid: str, reason: str) -> exception.SnapshotConflict:
    return exception.SnapshotConflict(action=action, name=name, instance=uuid, reason=reason)


def _quiesce_needs_external(uuid: str, name: str) -> exception.InvalidSnapshot:
    return exception.InvalidSnapshot(
        name=name,
        instance=uuid,
        reason="quiesce needs an external snapshot: libvirt freezes file systems "
        "only for disk-only snapshots (an internal one of a running server "
        "saves its memory instead)",
    )


def _is_agent_error(exc: libvirt.libvirtError) -> bool:
    """An error of the guest agent (libvirt 9.0 reports a failed command as an internal error)."""
    return (
        exc.get_error_code() in _AGENT_ERRORS or "agent" in (exc.get_error_message() or "").lower()
    )
