"""The ``dir`` backend: volumes are files in a local directory.

Root disks are qcow2 overlays whose backing file is a cached qcow2 copy of
the image (``<image_cache_path>/<image uuid>.qcow2``), so creating one costs
the same whatever the image's size. Empty volumes are qcow2 (thin, or
preallocated) or raw (sparse, or preallocated): ``[dir] volume_format`` and
``preallocation``.

The file logic lives in :class:`~storage_backends.filestore.FileStore`,
which works on a :class:`~storage_backends.files.Files` (where the files
are: :class:`~storage_backends.files.LocalFiles` here; the ``nfs`` backend
brings a mounted share or an NFS export reached by libnfs). Volume files are made
as ``<name>.part`` and published under their final name only when complete
(a crash leaves nothing that looks finished), and a cached image is never
replaced once published: overlays of running guests read it.

Reads of an image a guest may hold use ``qemu-img info -U``; writes
(snapshots, resize, revert) take QEMU's image lock, so a running guest's
volume is refused with :class:`~storage_backends.exception.VolumeBusy`.
Snapshots of a running guest are the virt driver's job (through libvirt).
"""

from __future__ import annotations

import logging

from oslo_config import cfg

from compute_driver import domain_xml as lvxml
from storage_backends import base
from storage_backends.files import (
    VOLUME_FORMATS,
    Files,
    Header,
    LocalFiles,
    ScannedFile,
    read_header,
    read_snapshots,
    volume_opts,
)
from storage_backends.filestore import FileStore, FileStoreBackend

# NOTE: the tests reach these through this module; the nfs backend imports
# them from their own modules (files, filestore).
__all__ = [
    "VOLUME_FORMATS",
    "DirStorageBackend",
    "FileStore",
    "FileStoreBackend",
    "Files",
    "Header",
    "LocalFiles",
    "ScannedFile",
    "list_opts",
    "read_header",
    "read_snapshots",
    "volume_opts",
]

LOG = logging.getLogger(__name__)

GROUP = cfg.OptGroup(
    "dir", title="dir storage backend", help="Volumes as files in a local directory."
)


OPTS = [
    cfg.StrOpt(
        "path",
        default="$state_path/volumes",
        help="Directory of the volume files. It must be traversable by the QEMU user (mode 0755).",
    ),
    cfg.StrOpt(
        "image_cache_path",
        default="$state_path/image-cache",
        help="Directory of cached image copies that root disks back onto. "
        "A cached image is the base of every root disk made from it: never "
        "delete one by hand while any disk uses it (cleanup_image_cache checks).",
    ),
    *volume_opts("dir"),
]


def list_opts() -> dict:
    return {GROUP: OPTS}


# --- the backend ------------------------------------------------------------


class DirStorageBackend(FileStoreBackend):
    """Volumes as qcow2 or raw files; root disks as overlays on cached images."""

    name = "dir"

    def __init__(self, conf: cfg.ConfigOpts, services: base.Services | None = None) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.opts = conf.dir
        self.files = LocalFiles(self.opts.path, self.opts.image_cache_path, cache_headers=True)
        self.files.check("start")
        self.store = FileStore(
            self.name, self.files, self.opts, overlays_in_process=True, locks_in_process=True
        )

    def describe(self) -> base.Description:
        return base.Description(
            name=self.name,
            shared=False,
            formats=tuple(VOLUME_FORMATS),
            linked_clone=True,
            snapshots=True,
            resize=True,
            image_cache=True,
            export=True,
        )

    def disk_config(self, volume: base.Volume) -> lvxml.Disk:
        return self.file_disk(volume)
