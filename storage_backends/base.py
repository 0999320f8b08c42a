"""The storage backend interface (namespace ``compute_driver.storage``).

A backend holds volumes (root disks and data volumes) and tells the virt
driver how to attach one, as a libvirt disk builder. Each backend reads its
own option group, named like its entry point (``[dir]``, ``[rbd]``, ...).
Optional abilities are declared by :meth:`StorageBackend.describe`.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from compute_driver import domain_xml as lvxml
from compute_driver.objects import ImageSpec
from storage_backends import exception

#: Volume names: UUID-like words only, so no name can escape a directory or pool.
VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def check_volume_name(name: str) -> str:
    """Return ``name`` if it is a safe volume name.

    :raises InvalidVolumeName: path separators, dots, NUL, XML metacharacters...
    """
    if not isinstance(name, str) or not VOLUME_NAME.match(name):
        raise exception.InvalidVolumeName(
            volume=name, reason="use letters, digits, '-' and '_' only"
        )
    return name


@dataclass(frozen=True)
class Volume:
    """A volume on a backend."""

    id: str
    backend: str
    size_gb: int
    format: str
    location: str


@dataclass(frozen=True)
class Capacity:
    """Space of a backend, in bytes."""

    total: int
    free: int
    #: What the backend's volumes and cached images promise (thin volumes
    #: may make this exceed ``total``).
    provisioned: int = 0


#: Abilities a backend may lack; ``describe()`` says which it has, and the
#: default methods below refuse with :class:`~storage_backends.exception.Unsupported`.
OPTIONAL_ABILITIES = ("snapshots", "resize", "linked_clone", "image_cache", "export")


@dataclass(frozen=True)
class Description:
    """What :meth:`StorageBackend.describe` returns: the backend and its abilities."""

    name: str
    #: Every host sees the same volumes.
    shared: bool
    #: Volume formats the backend makes (``qcow2``, ``raw``).
    formats: tuple[str, ...]
    linked_clone: bool = False
    snapshots: bool = False
    resize: bool = False
    image_cache: bool = False
    #: :meth:`StorageBackend.export_volume` works.
    export: bool = False
    #: Facts of this backend only (e.g. nfs ``access_mode``), for operators.
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The plain-dict form (the details merged in), for messages and logs."""
        wire = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        wire["formats"] = list(self.formats)
        details = wire.pop("details")
        return {**wire, **details}


@dataclass(frozen=True)
class Services:
    """What the agent lends a backend, passed in explicitly by the plugin loader.

    A backend reads its own option group and nothing else of the
    configuration: what it needs from the rest of the host comes from here.
    """

    #: The virt driver's open libvirt connection (for libvirt secrets); the
    #: backend must not close it. None when the driver has none.
    hypervisor: Callable[[], Any] | None = None


class StorageBackend(abc.ABC):
    """Holds volumes on one kind of storage.

    Made by the plugin loader as ``Backend(conf, services=Services(...))``:
    the backend registers and reads only its own group (``[<name>]``).
    """

    #: The entry-point name, also the name of the option group.
    name = ""

    @abc.abstractmethod
    def describe(self) -> Description:
        """The backend's name, whether it is shared, its formats, and which
        optional abilities of :data:`OPTIONAL_ABILITIES` it has."""

    @abc.abstractmethod
    def capacity(self) -> Capacity:
        """Total and free space.

        :raises BackendUnavailable: the storage cannot be reached.
        """

    @abc.abstractmethod
    def create_from_image(
        self, volume_id: str, image: ImageSpec, size_gb: int, linked: bool = True
    ) -> Volume:
        """A new volume holding ``image``.

        Idempotent: an existing volume of that id is returned as it is.

        :param size_gb: the volume's size; never smaller than the image.
        :param linked: True for a linked clone (copy-on-write over the
            image, where ``describe().linked_clone``), False for a full,
            independent copy.
        :raises InvalidVolumeName: unsafe ``volume_id``.
        :raises StorageError: the volume could not be made; nothing is left behind.
        """

    @abc.abstractmethod
    def create_volume(self, volume_id: str, size_gb: int) -> Volume:
        """A new, empty volume of ``size_gb`` GiB.

        Idempotent: an existing volume of that id is returned as it is.

        :raises InvalidVolumeName: unsafe ``volume_id``.
        :raises NoSpace: the backend has no room (nothing is left behind).
        :raises StorageError: the volume could not be made; nothing is left behind.
        """

    @abc.abstractmethod
    def get_volume(self, volume_id: str) -> Volume:
        """The volume ``volume_id`` as it is on the backend (its real size).

        :raises BackendVolumeNotFound: no such volume.
        """

    @abc.abstractmethod
    def delete_volume(self, volume_id: str) -> None:
        """Remove a volume. Idempotent: a missing volume is not an error.

        :raises InvalidVolumeName: unsafe ``volume_id``.
        :raises StorageError: the storage refused.
        """

    @abc.abstractmethod
    def disk_config(self, volume: Volume) -> lvxml.Disk:
        """The libvirt disk builder that attaches ``volume`` (target left to the caller)."""

    # NOTE: a hook, not an ability: backends without an image cache need no import.
    def import_image(self, image: ImageSpec) -> None:  # noqa: B027
        """Make ``image`` ready to clone on this backend (idempotent).

        Backends without an image cache need nothing: the default does nothing.
        """

    # --- optional abilities (declared by describe()) -------------------------

    def resize_volume(self, volume_id: str, size_gb: int) -> Volume:
        """Grow the volume to ``size_gb``; the same size is a no-op.

        :raises InvalidVolumeSize: smaller than it is (shrinking loses data).
        :raises BackendVolumeNotFound: no such volume.
        :raises Unsupported: ``describe().resize`` is false.
        """
        raise exception.Unsupported(backend=self.name, ability="resize")

    def create_snapshot(self, volume_id: str, snapshot: str) -> None:
        """Snapshot the volume (crash-consistent if a guest is writing to it).

        :raises DuplicateName: the volume has a snapshot of that name.
        :raises BackendVolumeNotFound: no such volume.
        :raises Unsupported: ``describe().snapshots`` is false.
        """
        raise exception.Unsupported(backend=self.name, ability="snapshots")

    def list_snapshots(self, volume_id: str) -> list[dict[str, Any]]:
        """The volume's snapshots, oldest first: ``name``, ``size_gb``, ``created_at``.

        :raises BackendVolumeNotFound: no such volume.
        :raises Unsupported: ``describe().snapshots`` is false.
        """
        raise exception.Unsupported(backend=self.name, ability="snapshots")

    def revert_to_snapshot(self, volume_id: str, snapshot: str) -> None:
        """Put the volume back as it was at ``snapshot``.

        :raises VolumeBusy: a guest has the volume open.
        :raises VolumeSnapshotNotFound, BackendVolumeNotFound: no such snapshot or volume.
        :raises Unsupported: ``describe().snapshots`` is false.
        """
        raise exception.Unsupported(backend=self.name, ability="snapshots")

    def delete_snapshot(self, volume_id: str, snapshot: str) -> None:
        """Remove a snapshot. Idempotent (a missing snapshot or volume is not an error).

        :raises Unsupported: ``describe().snapshots`` is false.
        """
        raise exception.Unsupported(backend=self.name, ability="snapshots")

    def cleanup_image_cache(self, min_age: int | None = None) -> list[str]:
        """Remove cached images no volume backs onto any more (never one in use).

        :returns: what was removed.
        :raises Unsupported: ``describe().image_cache`` is false.
        """
        raise exception.Unsupported(backend=self.name, ability="image_cache")

    def export_volume(self, volume_id: str, dest: str) -> None:
        """Write the volume as one standalone qcow2 file at ``dest`` (its
        backing chain flattened), e.g. to make an image of a stopped server.

        :param volume_id: a volume that no running guest writes to.
        :param dest: a new file path on this host (the caller reserved it).
        :raises Unsupported: ``describe().export`` is false.
        :raises BackendVolumeNotFound: no such volume.
        :raises StorageError: the copy failed; ``dest`` is removed.
        """
        raise exception.Unsupported(backend=self.name, ability="export")
