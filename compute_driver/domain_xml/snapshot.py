"""``<domainsnapshot>``: what to snapshot (on create) and what was snapshotted (parsed back).

A create request names the snapshot and says, disk by disk, ``internal``,
``external`` (with the overlay's ``source_file``) or ``no``. What libvirt
returns adds ``state``, ``creation_time``, ``parent`` and the ``domain`` as it
was when the snapshot was taken (its disk sources are the files the snapshot
froze). Imported directly (``from ...xml.snapshot import DomainSnapshot``).
"""

from __future__ import annotations

from .base import XMLBuilder, xml_child, xml_children, xml_property
from .domain import Domain

#: The states libvirt records for a snapshot (domainsnapshot.rng).
STATES = ("running", "blocked", "paused", "shutdown", "shutoff", "crashed", "disk-snapshot")


class SnapshotDisk(XMLBuilder):
    """One ``<disk>`` of ``<disks>``: ``name`` is the target dev (``vda``)."""

    XML_NAME = "disk"

    name: str | None = xml_property("./@name", required=True)
    snapshot: str | None = xml_property("./@snapshot", choices=("no", "internal", "external"))
    type: str | None = xml_property("./@type", choices=("file",))
    driver_type: str | None = xml_property("./driver/@type", choices=("qcow2",))
    source_file: str | None = xml_property("./source/@file")

    def _validate(self) -> None:
        external = (self.type, self.driver_type, self.source_file)
        if self.snapshot != "external" and any(v is not None for v in external):
            raise self.error("type, driver_type and source_file need snapshot 'external'")
        if self.source_file is not None and not self.source_file.startswith("/"):
            raise self.error(f"source_file {self.source_file!r} is not an absolute path")


class DomainSnapshot(XMLBuilder):
    """A whole ``<domainsnapshot>``.

    ``memory`` is the ``snapshot`` attribute of ``<memory>``: ``internal``
    saves the guest's RAM inside the qcow2 file, ``no`` leaves it out
    (external memory files are not supported here).
    """

    XML_NAME = "domainsnapshot"

    name: str | None = xml_property("./name")
    description: str | None = xml_property("./description")
    state: str | None = xml_property("./state", choices=STATES)
    parent: str | None = xml_property("./parent/name")
    creation_time: int | None = xml_property("./creationTime", int, minimum=0)
    memory: str | None = xml_property("./memory/@snapshot", choices=("no", "internal"))
    disks: list[SnapshotDisk] = xml_children(SnapshotDisk, path="./disks")
    domain: Domain | None = xml_child(Domain)

    def _validate(self) -> None:
        names = [disk.name for disk in self.disks]
        if len(set(names)) != len(names):
            raise self.error(f"a disk is named twice in {names}")

    def disk_modes(self) -> dict[str, str]:
        """``{target dev: internal|external|no}`` of the disks listed."""
        return {d.name: d.snapshot or "" for d in self.disks if d.name}

    @property
    def kind(self) -> str:
        """``external`` when any disk is, else ``internal``."""
        return "external" if "external" in self.disk_modes().values() else "internal"
