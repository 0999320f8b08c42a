"""The image store: imported image files, kept under ``[image] store_path``.

Import copies the files into a new directory named after the image UUID
(written under a temporary name and renamed, so a crash leaves no
half-imported image), checks the disk format with ``qemu-img info``, and
refuses qcow2 files with a backing file: a backing file could name any file
on the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

from compute_driver import exception

ACCEPTED_FORMATS = ("qcow2", "raw")


def inspect_disk(path: str) -> dict[str, Any]:
    """``qemu-img info`` of ``path`` as a dict.

    :raises InvalidImage: not readable, or not an image qemu-img understands.
    """
    try:
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", "--force-share", path],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except FileNotFoundError as exc:
        raise exception.InvalidImage(image=path, reason="qemu-img is not installed") from exc
    except subprocess.CalledProcessError as exc:
        raise exception.InvalidImage(image=path, reason=exc.stderr.strip()[:300]) from exc
    return json.loads(out)


def _copy_with_checksum(src: str, dst: str) -> str:
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(4 * 1024 * 1024):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    os.chmod(dst, 0o644)
    return digest.hexdigest()


def _file_checksum(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _readable_file(name: str, path: str | None) -> None:
    if path is not None and not os.path.isfile(path):
        raise exception.InvalidImage(image=name, reason="%s is not a readable file" % path)


class ImageStore:
    """Files of imported images under one directory."""

    def __init__(self, root: str, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def image_dir(self, uuid: str) -> str:
        return os.path.join(self.root, uuid)

    def import_files(
        self, uuid: str, name: str, disk: str, kernel: str | None = None, initrd: str | None = None
    ) -> dict[str, Any]:
        """Copy an image's files into the store.

        :returns: the fields of the image record (path, format, sizes, checksum,
            kernel and initrd paths).
        :raises InvalidImage: missing files, an unknown format, a backing file, too large.
        """
        for path in (disk, kernel, initrd):
            _readable_file(name, path)
        size = os.path.getsize(disk)
        if size > self.max_bytes:
            raise exception.InvalidImage(
                image=name, reason="%d bytes is more than [image] max_image_gb allows" % size
            )
        info = inspect_disk(disk)
        disk_format = info.get("format")
        if disk_format not in ACCEPTED_FORMATS:
            raise exception.InvalidImage(
                image=name,
                reason="format %s is not one of %s (convert it with qemu-img convert)"
                % (disk_format, ", ".join(ACCEPTED_FORMATS)),
            )
        if info.get("backing-filename"):
            raise exception.InvalidImage(
                image=name, reason="qcow2 images with a backing file are refused"
            )
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        final = self.image_dir(uuid)
        work = tempfile.mkdtemp(prefix=".import-", dir=self.root)
        try:
            os.chmod(work, 0o755)
            fields: dict[str, Any] = {
                "disk_format": disk_format,
                "path": os.path.join(final, "disk." + disk_format),
                "size_bytes": size,
                "virtual_size": int(info.get("virtual-size", size)),
                "checksum": _copy_with_checksum(disk, os.path.join(work, "disk." + disk_format)),
                "kernel_path": None,
                "initrd_path": None,
            }
            if kernel:
                _copy_with_checksum(kernel, os.path.join(work, "kernel"))
                fields["kernel_path"] = os.path.join(final, "kernel")
            if initrd:
                _copy_with_checksum(initrd, os.path.join(work, "initrd"))
                fields["initrd_path"] = os.path.join(final, "initrd")
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return fields

    def begin_export(self, uuid: str) -> str:
        """A fresh work directory for an image an agent writes (mode 0755)."""
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".export-%s-" % uuid, dir=self.root)
        os.chmod(work, 0o755)
        return work

    def finish_export(self, uuid: str, work: str, source: dict[str, Any]) -> dict[str, Any]:
        """Check the exported disk, copy the source image's kernel and initrd
        beside it, and move the directory into place.

        :returns: the fields of the image record.
        """
        disk = os.path.join(work, "disk.qcow2")
        info = inspect_disk(disk)
        if info.get("format") != "qcow2" or info.get("backing-filename"):
            raise exception.InvalidImage(
                image=uuid, reason="the exported disk is not standalone qcow2"
            )
        final = self.image_dir(uuid)
        fields: dict[str, Any] = {
            "disk_format": "qcow2",
            "path": os.path.join(final, "disk.qcow2"),
            "size_bytes": os.path.getsize(disk),
            "virtual_size": int(info.get("virtual-size", 0)),
            "checksum": _file_checksum(disk),
            "kernel_path": None,
            "initrd_path": None,
        }
        for key, name in (("kernel_path", "kernel"), ("initrd_path", "initrd")):
            if source.get(key):
                _copy_with_checksum(source[key], os.path.join(work, name))
                fields[key] = os.path.join(final, name)
        os.rename(work, final)
        return fields

    @staticmethod
    def abandon(work: str) -> None:
        """Remove a work directory of an export that failed."""
        shutil.rmtree(work, ignore_errors=True)

    def remove(self, uuid: str) -> None:
        """Delete an image's files (missing files are fine)."""
        shutil.rmtree(self.image_dir(uuid), ignore_errors=True)
