"""The image store: imported image files, kept under ``[image] store_path``.

Import reads only from the operator's import directory (``[image]
import_path``), by names relative to it, through
:mod:`compute_driver.disk_image`: no symlink or ``..`` is followed, only
regular files are read, sizes are counted while copying, and the copy is
probed (``qemu-img info`` under ``prlimit``) before anything else touches
it. Images with a backing file, an external data file or extents are
refused; vmdk, vdi, vhdx, vpc and qed are converted to qcow2 with their
format forced.

Each image gets a directory named after its UUID, written under a
temporary name and renamed, so a crash leaves no half-imported image. The
store is readable only by the services: directories 0711 (QEMU, which runs
as another user, must traverse to the kernel and initrd that libvirt labels
for it), files 0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from typing import Any

from compute_driver import disk_image, exception
from compute_driver.scheduler import records

#: Mode of the store's directories: only the services list them.
DIR_MODE = 0o711
#: Mode of the store's files: only the services read them.
FILE_MODE = 0o600


def agent_image(image: dict[str, Any]) -> dict[str, Any]:
    """An image record as an agent gets it (``schemas.IMAGE``): no paths.

    The agent derives the files from its own ``[image] store_path`` and the
    UUID (:func:`compute_driver.disk_image.stored_disk`).
    """
    return records.image_ref(image).to_wire()


def _publish(work: str, final: str) -> None:
    """Move a finished work directory into place; never over another's files.

    :raises InvalidImage: files of that image UUID are already in the store
        (another import of it finished first, or debris of a crash that the
        operator removes).
    """
    try:
        os.rename(work, final)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        raise exception.InvalidImage(
            image=os.path.basename(final), reason="its files are already in the image store"
        ) from None


class ImageStore:
    """Files of imported images under one directory."""

    def __init__(self, root: str, import_root: str, limits: disk_image.Limits) -> None:
        self.root = root
        self.import_root = import_root
        self.limits = limits

    def image_dir(self, uuid: str) -> str:
        return disk_image.image_dir(self.root, uuid)

    def _ensure_root(self) -> None:
        if not os.path.isdir(self.root):
            os.makedirs(self.root, mode=DIR_MODE, exist_ok=True)
            os.chmod(self.root, DIR_MODE)

    def import_files(
        self,
        uuid: str,
        name: str,
        disk: str,
        kernel: str | None = None,
        initrd: str | None = None,
        disk_format: str | None = None,
    ) -> dict[str, Any]:
        """Copy an image's files from the import directory into the store.

        :param disk: the disk's name relative to ``[image] import_path``
            (``kernel`` and ``initrd`` too).
        :param disk_format: the format the caller says the disk has; None:
            what the file's extension says, if it names a format, else any.
        :returns: the fields of the image record (path, format, sizes,
            checksum, kernel and initrd paths).
        :raises InvalidImage: a name outside the import directory, a
            symlink, a non-regular file, too large, a hostile or unknown
            format. Nothing is stored.
        """
        claimed = disk_format or disk_image.claimed_format(disk)
        fds: dict[str, int] = {}
        try:
            # NOTE: all three are opened (and refused) before anything is copied.
            for what, rel in (("file", disk), ("kernel", kernel), ("initrd", initrd)):
                if rel is not None:
                    fds[what] = disk_image.open_beneath(self.import_root, rel, what)
            self._ensure_root()
            work = tempfile.mkdtemp(prefix=".import-", dir=self.root)
            try:
                fields = self._import_into(work, uuid, name, fds, claimed)
                os.chmod(work, DIR_MODE)
                _publish(work, self.image_dir(uuid))
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
        finally:
            for fd in fds.values():
                os.close(fd)
        return fields

    def _import_into(
        self, work: str, uuid: str, name: str, fds: dict[str, int], claimed: str | None
    ) -> dict[str, Any]:
        final = self.image_dir(uuid)
        source = os.path.join(work, "source")
        checksum = disk_image.copy_bounded(fds["file"], source, self.limits.max_bytes, name)
        info = disk_image.probe(source, name, self.limits, claimed)
        if info.format in disk_image.STORE_FORMATS:
            disk_format = info.format
            os.rename(source, os.path.join(work, "disk." + disk_format))
        else:
            disk_format = "qcow2"
            converted = os.path.join(work, "disk.qcow2")
            disk_image.convert(source, info.format, converted, name)
            os.unlink(source)
            # NOTE: the converted disk is ours, but check it as we would any.
            disk_image.probe(converted, name, self.limits, "qcow2")
            checksum = disk_image.file_checksum(converted)
        stored = os.path.join(work, "disk." + disk_format)
        fields: dict[str, Any] = {
            "disk_format": disk_format,
            "path": os.path.join(final, "disk." + disk_format),
            "size_bytes": os.path.getsize(stored),
            "virtual_size": info.virtual_size,
            "checksum": checksum,
            "kernel_path": None,
            "initrd_path": None,
        }
        for what in ("kernel", "initrd"):
            if what in fds:
                disk_image.copy_bounded(
                    fds[what], os.path.join(work, what), self.limits.max_bytes, name, what
                )
                fields[what + "_path"] = os.path.join(final, what)
        return fields

    def begin_export(self, uuid: str) -> str:
        """The work directory an agent writes new image ``uuid``'s disk into
        (named after the UUID, so the agent derives it; mode 0700).

        :raises InvalidImage: the directory exists (another export of this UUID).
        """
        self._ensure_root()
        work = disk_image.export_dir(self.root, uuid)
        try:
            os.mkdir(work, 0o700)
        except FileExistsError:
            raise exception.InvalidImage(
                image=uuid, reason="an export of this image is already under way"
            ) from None
        return work

    def finish_export(self, uuid: str, work: str, source: dict[str, Any]) -> dict[str, Any]:
        """Check the exported disk, copy the source image's kernel and initrd
        beside it, and move the directory into place.

        :returns: the fields of the image record.
        """
        disk = os.path.join(work, disk_image.EXPORT_DISK)
        info = disk_image.probe(disk, uuid, self.limits, "qcow2")
        os.chmod(disk, FILE_MODE)
        final = self.image_dir(uuid)
        fields: dict[str, Any] = {
            "disk_format": "qcow2",
            "path": os.path.join(final, "disk.qcow2"),
            "size_bytes": os.path.getsize(disk),
            "virtual_size": info.virtual_size,
            "checksum": disk_image.file_checksum(disk),
            "kernel_path": None,
            "initrd_path": None,
        }
        for what in ("kernel", "initrd"):
            if source.get(what + "_path"):
                # NOTE: from the source image's own directory, not from the
                # path in its record.
                fd = disk_image.open_beneath(self.root, "%s/%s" % (source["uuid"], what), what)
                try:
                    disk_image.copy_bounded(
                        fd, os.path.join(work, what), self.limits.max_bytes, uuid, what
                    )
                finally:
                    os.close(fd)
                fields[what + "_path"] = os.path.join(final, what)
        os.chmod(work, DIR_MODE)
        _publish(work, final)
        return fields

    @staticmethod
    def abandon(work: str) -> None:
        """Remove a work directory of an export that failed."""
        shutil.rmtree(work, ignore_errors=True)

    def remove(self, uuid: str) -> None:
        """Delete an image's files (missing files are fine)."""
        with contextlib.suppress(exception.InvalidImage):
            shutil.rmtree(self.image_dir(uuid), ignore_errors=True)
