"""This host's storage backends, and how a volume payload becomes a disk.

The instance endpoint finds root disks and boot volumes here, the volume
endpoint every volume it is asked about; both through :class:`HostStorage`,
which the host object holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from compute_driver import exception
from storage_backends import base as storage_base


class HostStorage(Mapping[str, storage_base.StorageBackend]):
    """This host's storage backends by name, and which one holds root disks.

    :param backends: the loaded backends by name.
    :param root: ``[storage] root_backend``: where a server's root disk made
        from its image goes, unless the build names another backend.
    """

    def __init__(self, backends: Mapping[str, storage_base.StorageBackend], root: str) -> None:
        self._backends = dict(backends)
        self.root_name = root

    def __getitem__(self, name: str) -> storage_base.StorageBackend:
        return self._backends[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._backends)

    def __len__(self) -> int:
        return len(self._backends)

    def backend(self, name: str) -> storage_base.StorageBackend:
        """The storage backend ``name`` of this host.

        :raises PluginNotFound: this host does not offer it.
        """
        try:
            return self._backends[name]
        except KeyError:
            raise exception.PluginNotFound(
                family="storage", name=name, available=", ".join(sorted(self._backends))
            ) from None

    def root(self, name: str | None = None) -> storage_base.StorageBackend:
        """The backend of root disks: ``name``, or ``[storage] root_backend``.

        :raises PluginNotFound: this host does not offer it.
        """
        return self.backend(name or self.root_name)

    def volume_of(self, payload: dict[str, Any]) -> storage_base.Volume:
        """The backend's view of a ``schemas.VOLUME`` payload (asking the backend
        when the payload lacks the location).

        :raises PluginNotFound: this host does not offer its backend.
        """
        backend = self.backend(payload["backend"])
        if payload.get("location") is None:
            return backend.get_volume(payload["id"])
        return storage_base.Volume(
            id=payload["id"],
            backend=payload["backend"],
            size_gb=payload.get("size_gb", 0),
            format=payload.get("format", "raw"),
            location=payload["location"],
        )

    def disk_of(self, payload: dict[str, Any]) -> Any:
        """The libvirt disk builder that attaches a ``schemas.VOLUME`` payload.

        :raises PluginNotFound: this host does not offer its backend.
        """
        volume = self.volume_of(payload)
        return self.backend(volume.backend).disk_config(volume)
