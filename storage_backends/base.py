"""The storage backend interface (namespace ``compute_driver.storage``).

A backend holds volumes (root disks and data volumes) and tells the virt
driver how to attach one, as a libvirt disk builder. Each backend reads its
own option group, named like its entry point (``[dir]``, ``[rbd]``, ...).
Optional abilities are declared by :meth:`StorageBackend.describe`.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from typing import Any

from compute_driver.virt.base import ImageSpec
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


class StorageBackend(abc.ABC):
    """Holds volumes on one kind of storage."""

    #: The entry-point name, also the name of the option group.
    name = ""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Abilities: ``shared`` (all hosts see the same volumes), ``formats``,
        ``linked_clone``, ``snapshots``."""

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
            image, where ``describe()["linked_clone"]``), False for a full,
            independent copy.
        :raises InvalidVolumeName: unsafe ``volume_id``.
        :raises StorageError: the volume could not be made; nothing is left behind.
        """

    @abc.abstractmethod
    def delete_volume(self, volume_id: str) -> None:
        """Remove a volume. Idempotent: a missing volume is not an error.

        :raises InvalidVolumeName: unsafe ``volume_id``.
        :raises StorageError: the storage refused.
        """

    @abc.abstractmethod
    def disk_config(self, volume: Volume):
        """The libvirt disk builder that attaches ``volume`` (target left to the caller)."""
