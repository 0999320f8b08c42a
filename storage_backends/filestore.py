"""The volume logic of file-based backends: volumes as image files, root disks as overlays.

:class:`FileStore` serves the ``dir`` backend (local directories) and the
``nfs`` backend (an export, mounted or reached by libnfs): it works on a
:class:`~storage_backends.files.Files`, which says where the files are. See
:mod:`storage_backends.dir` for the files it makes and how.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from compute_driver import domain_xml as lvxml
from compute_driver import exception as cd_exception
from compute_driver.disk_image import qcow2, qemu_img
from compute_driver.objects import ImageSpec
from storage_backends import base, exception
from storage_backends.files import (
    VOLUME_FORMATS,
    Files,
    Header,
    ScannedFile,
    qemu_lock_held,
    read_snapshots,
)

LOG = logging.getLogger(__name__)

GiB = 1024**3
#: Suffix of a volume file while it is being made.
PART = ".part"
#: Prefix of a cached image while it is being converted.
CACHING = ".caching-"
#: Image formats the cache converts from; never probed, the image store says which.
IMAGE_FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhdx", "vpc", "qed")
#: VMDK subformats whose data is in the one file (others name extent files,
#: which could be any file of the host).
SAFE_VMDK_TYPES = ("monolithicSparse", "streamOptimized", "monolithicFlat")
PREALLOCATIONS = {"qcow2": ("off", "metadata", "falloc", "full"), "raw": ("off", "falloc", "full")}
#: Files of this backend in the volume directory (other files there, such as
#: the virt driver's snapshot overlays ``<vol>.snap-<x>.qcow2``, are not volumes).
_VOLUME_FILE = re.compile(r"^(?P<id>[A-Za-z0-9][A-Za-z0-9_-]{0,127})\.(?P<fmt>qcow2|raw)(\.part)?$")
_LOCK_ERROR = re.compile(r"Failed to get .*lock|Is another process using the image")
_NO_SPACE_ERROR = re.compile(r"No space left on device|Disk quota exceeded")


# --- the volume logic -------------------------------------------------------


class FileStore:
    """Volumes as image files: the logic of every file-based backend.

    :param backend: the backend's name, for errors.
    :param files: where the files are.
    :param opts: the backend's option group (the :func:`volume_opts`).
    :param overlays_in_process: write linked clones' qcow2 overlays in this
        process (:mod:`compute_driver.disk_image.qcow2`) where they are a common case,
        instead of running ``qemu-img create``. Only for files on a local
        file system: a write here has no timeout, where qemu-img's run has.
    :param locks_in_process: test QEMU's image locks in this process
        (:func:`~storage_backends.files.qemu_lock_held`) before a delete,
        instead of running ``qemu-img info``. Only for a local file system,
        for the same reason.
    """

    def __init__(
        self,
        backend: str,
        files: Files,
        opts: Any,
        overlays_in_process: bool = False,
        locks_in_process: bool = False,
    ) -> None:
        self.backend = backend
        self.files = files
        self.overlays_in_process = overlays_in_process
        self.locks_in_process = locks_in_process
        self.volume_format = opts.volume_format
        self.preallocation = opts.preallocation
        self.image_cache_min_age = opts.image_cache_min_age
        if self.preallocation not in PREALLOCATIONS[self.volume_format]:
            raise cd_exception.InvalidConfig(
                reason="[%s] preallocation %s is not possible for volume_format %s (use one "
                "of %s)"
                % (
                    backend,
                    self.preallocation,
                    self.volume_format,
                    ", ".join(PREALLOCATIONS[self.volume_format]),
                )
            )
        self._locks_lock = threading.Lock()
        # NOTE: reentrant: create_from_image holds it around import_image.
        self._image_locks: dict[str, threading.RLock] = {}

    # --- helpers --------------------------------------------------------------

    def _image_lock(self, image_uuid: str) -> threading.RLock:
        with self._locks_lock:
            return self._image_locks.setdefault(image_uuid, threading.RLock())

    def qemu_img(self, operation: str, volume: str, *args: str, copy: bool = False) -> str:
        """``qemu-img ARGS`` with its failures turned into our typed errors.

        :raises VolumeBusy: a guest holds the image's lock.
        :raises NoSpace: the storage is full.
        :raises BackendUnavailable: the storage cannot be reached (per ``files``).
        :raises StorageError: any other failure.
        """
        try:
            return qemu_img.run(*args, timeout=self.files.timeout(copy))
        except cd_exception.StorageError as exc:
            reason = str(exc.kwargs.get("reason", exc))
            if _LOCK_ERROR.search(reason):
                raise exception.VolumeBusy(
                    backend=self.backend,
                    volume=volume,
                    reason="%s: a guest has it open (stop it, or let the virt driver do "
                    "it through libvirt)" % operation,
                ) from exc
            if _NO_SPACE_ERROR.search(reason):
                raise exception.NoSpace(
                    backend=self.backend, volume=volume, needed="more", free="none (%s)" % reason
                ) from exc
            unavailable = self.files.unavailable(reason)
            if unavailable is not None:
                raise unavailable from exc
            raise cd_exception.StorageError(
                operation=operation, volume=volume, reason=reason
            ) from exc

    def _write_overlay(self, volume: str, location: str, size: int, backing: str) -> None:
        """What ``qemu-img create -f qcow2 -F qcow2 -b BACKING LOCATION SIZE`` does, in-process.

        :raises NoSpace: the storage is full.
        :raises StorageError: any other failure.
        """
        try:
            qcow2.write_overlay(location, size, backing, "qcow2")
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise exception.NoSpace(
                    backend=self.backend, volume=volume, needed="more", free="none (%s)" % exc
                ) from exc
            raise cd_exception.StorageError(
                operation="create", volume=volume, reason="writing the overlay: %s" % exc
            ) from exc

    def _find(self, volume_id: str) -> ScannedFile | None:
        base.check_volume_name(volume_id)
        for fmt in VOLUME_FORMATS:
            found = self.files.stat("volumes", "%s.%s" % (volume_id, fmt))
            if found is not None and fmt == "raw":
                # NOTE: a raw volume's first bytes are its guest's: a qcow2
                # header written there (with a host file as backing file)
                # must never make it a qcow2. The name says the format.
                return dataclasses.replace(
                    found, header=Header(format="raw", virtual_size=found.size)
                )
            if found is not None:
                return found
        return None

    def _require(self, volume_id: str) -> ScannedFile:
        found = self._find(volume_id)
        if found is None:
            raise exception.BackendVolumeNotFound(volume=volume_id, backend=self.backend)
        if found.header is None:
            raise cd_exception.StorageError(
                operation="read", volume=volume_id, reason="its header cannot be read"
            )
        return found

    def _volume(self, volume_id: str, found: ScannedFile) -> base.Volume:
        assert found.header is not None
        return base.Volume(
            id=volume_id,
            backend=self.backend,
            size_gb=math.ceil(found.header.virtual_size / GiB),
            format=found.header.format,
            location=self.files.location("volumes", found.name),
        )

    def _preallocation_args(self, fmt: str, option: bool = True) -> list[str]:
        mode = self.preallocation
        if mode == "off" or mode not in PREALLOCATIONS[fmt]:
            return []
        return ["-o", "preallocation=" + mode] if option else ["--preallocation=" + mode]

    def _check_room(self, volume: str, needed: int) -> None:
        total, free = self.files.space()
        if needed > free:
            raise exception.NoSpace(
                backend=self.backend, volume=volume, needed="%d bytes" % needed, free=free
            )

    def _needed(self, size: int) -> int:
        """Bytes a new volume of ``size`` takes at once (thin: none)."""
        return size if self.preallocation in ("falloc", "full") else 0

    def _make(
        self,
        volume_id: str,
        fmt: str,
        build: Callable[[str, str], None],
        made: Header | None = None,
    ) -> base.Volume:
        """Build ``<id>.<fmt>.part`` with ``build(location, part_name)``, then publish it.

        :param made: the header ``build`` writes, when known beforehand: the
            published file is then not read back.
        """
        name = "%s.%s" % (volume_id, fmt)
        part = name + PART
        self.files.unlink("volumes", part)  # a crashed attempt's leftover
        try:
            build(self.files.location("volumes", part), part)
            self.files.chmod("volumes", part, self.files.file_mode)
            published = self.files.publish("volumes", part, name)
            if not published:
                LOG.info("Volume %s was made meanwhile by another caller", volume_id)
        except BaseException:
            try:
                self.files.unlink("volumes", part)
            except Exception:
                LOG.exception("Could not remove %s", part)
            raise
        if published and made is not None:
            return self._volume(volume_id, ScannedFile(name, 0, 0, 0.0, made))
        return self._volume(volume_id, self._require(volume_id))

    # --- volumes --------------------------------------------------------------

    def create_volume(self, volume_id: str, size_gb: int) -> base.Volume:
        base.check_volume_name(volume_id)
        if size_gb < 1:
            raise exception.InvalidVolumeSize(
                volume=volume_id, size_gb=size_gb, reason="a volume has at least 1 GiB"
            )
        self.files.check("create")
        existing = self._find(volume_id)
        if existing is not None:
            return self._volume(volume_id, self._require(volume_id))
        fmt, size = self.volume_format, size_gb * GiB
        self._check_room(volume_id, self._needed(size))

        def build(location: str, part: str) -> None:
            self.qemu_img(
                "create",
                volume_id,
                "create",
                "-q",
                "-f",
                fmt,
                *self._preallocation_args(fmt),
                location,
                str(size),
                copy=self.preallocation == "full",
            )

        volume = self._make(volume_id, fmt, build)
        LOG.info(
            "Created %s volume %s (%d GiB, preallocation %s)",
            fmt,
            volume_id,
            size_gb,
            self.preallocation,
        )
        return volume

    def create_from_image(
        self, volume_id: str, image: ImageSpec, size_gb: int, linked: bool = True
    ) -> base.Volume:
        base.check_volume_name(volume_id)
        self.files.check("create")
        existing = self._find(volume_id)
        if existing is not None:
            return self._volume(volume_id, self._require(volume_id))
        with self._image_lock(image.uuid):
            # NOTE: the header read when it was found (or cached) serves: a
            # cached image is never rewritten once published.
            cached, scanned = self._import_image(image)
            # NOTE: the cached image's mtime says when it was last used:
            # cleanup on another host sharing the cache leaves it alone.
            self.files.touch("images", cached)
            image_size = scanned.header.virtual_size if scanned and scanned.header else 0
            size = max(size_gb * GiB, image_size, image.virtual_size)
            cached_location = self.files.location("images", cached)
            if linked:
                fmt = "qcow2"
                backing = cached_location
                in_process = (
                    self.overlays_in_process
                    and scanned is not None
                    and scanned.header is not None
                    and scanned.header.format == "qcow2"
                    and qcow2.fits(size, backing, "qcow2")
                )

                def build(location: str, part: str) -> None:
                    if in_process:
                        self._write_overlay(volume_id, location, size, backing)
                        return
                    self.qemu_img(
                        "create",
                        volume_id,
                        "create",
                        "-q",
                        "-f",
                        "qcow2",
                        "-F",
                        "qcow2",
                        "-b",
                        backing,
                        location,
                        str(size),
                    )

            else:
                fmt = self.volume_format
                self._check_room(volume_id, max(self._needed(size), scanned.used if scanned else 0))

                def build(location: str, part: str) -> None:
                    # A full copy: the volume no longer needs the cached image.
                    self.qemu_img(
                        "copy",
                        volume_id,
                        "convert",
                        "-q",
                        "-f",
                        "qcow2",
                        "-O",
                        fmt,
                        *self._preallocation_args(fmt),
                        cached_location,
                        location,
                        copy=True,
                    )
                    self.qemu_img(
                        "resize",
                        volume_id,
                        "resize",
                        "-q",
                        "-f",
                        fmt,
                        *self._preallocation_args(fmt, option=False),
                        location,
                        str(size),
                        copy=self.preallocation == "full",
                    )

            made = Header("qcow2", size, backing) if linked and in_process else None
            volume = self._make(volume_id, fmt, build, made)
        LOG.info(
            "Created volume %s from image %s (%s)",
            volume_id,
            image.uuid,
            "linked clone" if linked else "full copy",
        )
        return volume

    def get_volume(self, volume_id: str) -> base.Volume:
        self.files.check("get")
        return self._volume(volume_id, self._require(volume_id))

    def delete_volume(self, volume_id: str) -> None:
        base.check_volume_name(volume_id)
        self.files.check("delete")
        removed = False
        for fmt in VOLUME_FORMATS:
            name = "%s.%s" % (volume_id, fmt)
            if self.files.has_locks and self.files.stat("volumes", name) is not None:
                self._refuse_if_open(volume_id, name, "delete")
            for candidate in (name, name + PART):
                removed = self.files.unlink("volumes", candidate) or removed
        if removed:
            LOG.info("Deleted volume %s", volume_id)

    def _refuse_if_open(self, volume_id: str, name: str, operation: str) -> None:
        """:raises VolumeBusy: a guest holds the file's lock (only where locks work)."""
        if self.locks_in_process:
            # NOTE: the lock test qemu-img would make, without its run (~4 ms
            # of CPU per delete); a file that cannot be opened is not held.
            try:
                held = qemu_lock_held(self.files.location("volumes", name))
            except OSError:
                return
            if held:
                raise exception.VolumeBusy(
                    backend=self.backend,
                    volume=volume_id,
                    reason="%s: a guest has it open (stop it, or let the virt driver do "
                    "it through libvirt)" % operation,
                )
            return
        # NOTE: without -U, qemu-img asks for the shared lock a running guest
        # denies; a damaged file that fails otherwise may still be deleted.
        try:
            fmt = name.rsplit(".", 1)[1]
            location = self.files.location("volumes", name)
            self.qemu_img(operation, volume_id, "info", "-f", fmt, location)
        except exception.VolumeBusy:
            raise
        except cd_exception.StorageError:
            pass

    def resize_volume(self, volume_id: str, size_gb: int) -> base.Volume:
        self.files.check("resize")
        found = self._require(volume_id)
        assert found.header is not None
        size = found.header.virtual_size
        if size_gb * GiB < size:
            raise exception.InvalidVolumeSize(
                volume=volume_id,
                size_gb=size_gb,
                reason="it is %g GiB and shrinking would lose data" % (size / GiB),
            )
        if size_gb * GiB == size:
            return self._volume(volume_id, found)
        fmt = found.header.format
        self._check_room(volume_id, self._needed(size_gb * GiB - size))
        self.qemu_img(
            "resize",
            volume_id,
            "resize",
            "-q",
            "-f",
            fmt,
            *self._preallocation_args(fmt, option=False),
            self.files.location("volumes", found.name),
            str(size_gb * GiB),
            copy=self.preallocation == "full",
        )
        LOG.info("Grew volume %s to %d GiB", volume_id, size_gb)
        return self._volume(volume_id, self._require(volume_id))

    def capacity(self) -> base.Capacity:
        self.files.check("capacity")
        total, free = self.files.space()
        provisioned = 0
        # NOTE: capacity is asked for every report: where the files allow it,
        # only the headers of files that changed are read again.
        scan = getattr(self.files, "scan_reusing_headers", self.files.scan)
        for area in ("volumes", "images"):
            for scanned in scan(area):
                ours = _VOLUME_FILE.match(scanned.name) if area == "volumes" else True
                if ours and scanned.header is not None:
                    provisioned += scanned.header.virtual_size
        return base.Capacity(total=total, free=free, provisioned=provisioned)

    def export_volume(self, volume_id: str, dest: str) -> None:
        """Write the volume as one standalone qcow2 file at ``dest`` (its
        backing chain flattened), e.g. to make an image of a stopped server.

        :raises StorageError: qemu-img failed; ``dest`` is removed.
        """
        self.files.check("export")
        found = self._require(volume_id)
        assert found.header is not None  # _require says so
        try:
            self.qemu_img(
                "export",
                volume_id,
                "convert",
                "-q",
                # NOTE: the format forced: qemu-img must not probe a raw volume.
                "-f",
                found.header.format,
                "-O",
                "qcow2",
                self.files.location("volumes", found.name),
                dest,
                copy=True,
            )
            os.chmod(dest, 0o600)
        except BaseException:
            if os.path.exists(dest):
                os.unlink(dest)
            raise

    # --- snapshots ------------------------------------------------------------

    def _snapshots(self, volume_id: str) -> tuple[ScannedFile, list[dict[str, Any]]]:
        found = self._require(volume_id)
        assert found.header is not None
        if found.header.format != "qcow2":
            raise exception.Unsupported(
                backend=self.backend, ability="snapshots of %s volumes" % found.header.format
            )
        snaps = read_snapshots(
            lambda o, n: self.files.read("volumes", found.name, o, n), found.header
        )
        return found, snaps

    def create_snapshot(self, volume_id: str, snapshot: str) -> None:
        base.check_volume_name(snapshot)
        self.files.check("snapshot")
        found, snaps = self._snapshots(volume_id)
        if any(s["name"] == snapshot for s in snaps):
            raise cd_exception.DuplicateName(what="Snapshot of " + volume_id, name=snapshot)
        location = self.files.location("volumes", found.name)
        self.qemu_img("snapshot", volume_id, "snapshot", "-c", snapshot, location)
        LOG.info("Snapshot %s of volume %s created", snapshot, volume_id)

    def list_snapshots(self, volume_id: str) -> list[dict[str, Any]]:
        self.files.check("list snapshots")
        _, snaps = self._snapshots(volume_id)
        return [
            {
                "name": s["name"],
                "size_gb": math.ceil(s["size"] / GiB),
                "created_at": datetime.datetime.fromtimestamp(s["date"], datetime.UTC).isoformat(),
            }
            for s in snaps
        ]

    def revert_to_snapshot(self, volume_id: str, snapshot: str) -> None:
        base.check_volume_name(snapshot)
        self.files.check("revert")
        found, snaps = self._snapshots(volume_id)
        if not any(s["name"] == snapshot for s in snaps):
            raise exception.VolumeSnapshotNotFound(
                snapshot=snapshot, volume=volume_id, backend=self.backend
            )
        location = self.files.location("volumes", found.name)
        self.qemu_img("revert", volume_id, "snapshot", "-a", snapshot, location)
        LOG.info("Volume %s reverted to snapshot %s", volume_id, snapshot)

    def delete_snapshot(self, volume_id: str, snapshot: str) -> None:
        base.check_volume_name(snapshot)
        self.files.check("delete snapshot")
        if self._find(volume_id) is None:
            return
        found, snaps = self._snapshots(volume_id)
        if not any(s["name"] == snapshot for s in snaps):
            return
        location = self.files.location("volumes", found.name)
        self.qemu_img("delete snapshot", volume_id, "snapshot", "-d", snapshot, location)
        LOG.info("Snapshot %s of volume %s deleted", snapshot, volume_id)

    # --- the image cache ------------------------------------------------------

    def import_image(self, image: ImageSpec) -> str:
        """The name of the cached qcow2 copy of ``image``, converting it on first use.

        The format is never probed: it is the image store's word. An image
        with a backing or data file, or a VMDK whose data is in other files
        (either could name any file of this host), is refused.

        :raises InvalidImage: unknown format, or it names other files.
        :raises NoSpace: the cache has no room for it.
        :raises StorageError: it is not in the image store, or qemu-img failed.
        """
        return self._import_image(image)[0]

    def _import_image(self, image: ImageSpec) -> tuple[str, ScannedFile | None]:
        """:meth:`import_image`, and the cached file as found (None if it vanished)."""
        base.check_volume_name(image.uuid)
        name = image.uuid + ".qcow2"
        self.files.check("import image")
        found = self.files.stat("images", name)
        if found is not None:
            return name, found
        with self._image_lock(image.uuid):
            found = self.files.stat("images", name)
            if found is not None:
                return name, found
            self._check_image(image)
            self._check_room(image.uuid, os.path.getsize(image.path))
            tmp = "%s%s-%s" % (CACHING, image.uuid, uuid.uuid4().hex[:8])
            try:
                self.qemu_img(
                    "cache image",
                    image.uuid,
                    "convert",
                    "-q",
                    "-f",
                    image.disk_format,
                    "-O",
                    "qcow2",
                    image.path,
                    self.files.location("images", tmp),
                    copy=True,
                )
                # NOTE: world-readable: QEMU opens backing files as its own
                # user, and libvirt does not label them for it here (a guest
                # on a 0600 cached image pauses on its first read; on NFS
                # there is no <identity> for them either).
                self.files.chmod("images", tmp, 0o644)
                if not self.files.publish("images", tmp, name):
                    LOG.info("Image %s was cached meanwhile by another host", image.uuid)
                    return name, self.files.stat("images", name)
            except BaseException:
                try:
                    self.files.unlink("images", tmp)
                except Exception:
                    LOG.exception("Could not remove %s", tmp)
                raise
        LOG.info("Cached image %s (%s) as %s", image.uuid, image.disk_format, name)
        return name, self.files.stat("images", name)

    def _check_image(self, image: ImageSpec) -> None:
        if image.disk_format not in IMAGE_FORMATS:
            raise cd_exception.InvalidImage(
                image=image.uuid,
                reason="format %r is not one of %s" % (image.disk_format, ", ".join(IMAGE_FORMATS)),
            )
        if not os.path.isfile(image.path):
            raise cd_exception.StorageError(
                operation="cache image",
                volume=image.uuid,
                reason="%s is not in the image store" % image.path,
            )
        info = json.loads(
            self.qemu_img(
                "cache image",
                image.uuid,
                "info",
                "--output=json",
                "-U",
                "-f",
                image.disk_format,
                image.path,
            )
        )
        specific = info.get("format-specific", {}).get("data", {})
        if info.get("backing-filename") or specific.get("data-file"):
            raise cd_exception.InvalidImage(
                image=image.uuid,
                reason="it has a backing or data file; the image store holds whole images",
            )
        if image.disk_format == "vmdk" and specific.get("create-type") not in SAFE_VMDK_TYPES:
            raise cd_exception.InvalidImage(
                image=image.uuid,
                reason="VMDK type %r keeps its data in other files (allowed: %s)"
                % (specific.get("create-type"), ", ".join(SAFE_VMDK_TYPES)),
            )

    def cleanup_image_cache(self, min_age: int | None = None) -> list[str]:
        """Remove cached images no file backs onto and unused for ``min_age`` s.

        Every file in both directories is read (volumes, the virt driver's
        snapshot overlays, cached images), and any cached image named as a
        backing file anywhere in their chains is kept; so is everything if
        one volume file cannot be read. Leftovers of interrupted caching
        older than ``min_age`` go too.

        :param min_age: default ``image_cache_min_age``.
        :returns: the names removed.
        """
        min_age = self.image_cache_min_age if min_age is None else min_age
        self.files.check("clean image cache")
        scanned = self.files.scan("volumes") + self.files.scan("images")
        unreadable = [s.name for s in scanned if s.header is None]
        if unreadable:
            LOG.warning(
                "Not cleaning the image cache: cannot read %s", ", ".join(sorted(unreadable))
            )
            return []
        # NOTE: by base name: a backing file written as a path, a URL or a
        # relative name all protect the cached image of that name.
        backed = {
            os.path.basename(s.header.backing) for s in scanned if s.header and s.header.backing
        }
        removed = []
        for cached in self.files.scan("images"):
            if cached.name in backed:
                continue
            image_uuid = cached.name.split(".")[0] if not cached.name.startswith(CACHING) else ""
            lock = self._image_lock(image_uuid) if image_uuid else threading.RLock()
            with lock:
                now = self.files.stat("images", cached.name)
                if now is None or time.time() - now.mtime < min_age:
                    continue
                if self.files.unlink("images", cached.name):
                    removed.append(cached.name)
        if removed:
            LOG.info("Removed unused cached images: %s", ", ".join(removed))
        return removed


# --- the backend ------------------------------------------------------------


class FileStoreBackend(base.StorageBackend):
    """A backend whose volumes are files: every call goes to ``self.store``."""

    store: FileStore
    files: Files

    def capacity(self) -> base.Capacity:
        return self.store.capacity()

    def cached_image(self, image: ImageSpec) -> str:
        """Where the cached copy of ``image`` is, converting it in on first use."""
        return self.files.location("images", self.store.import_image(image))

    def import_image(self, image: ImageSpec) -> None:
        self.store.import_image(image)

    def cleanup_image_cache(self, min_age: int | None = None) -> list[str]:
        """See :meth:`FileStore.cleanup_image_cache`."""
        return self.store.cleanup_image_cache(min_age)

    def create_from_image(
        self, volume_id: str, image: ImageSpec, size_gb: int, linked: bool = True
    ) -> base.Volume:
        return self.store.create_from_image(volume_id, image, size_gb, linked)

    def create_volume(self, volume_id: str, size_gb: int) -> base.Volume:
        return self.store.create_volume(volume_id, size_gb)

    def get_volume(self, volume_id: str) -> base.Volume:
        return self.store.get_volume(volume_id)

    def export_volume(self, volume_id: str, dest: str) -> None:
        self.store.export_volume(volume_id, dest)

    def delete_volume(self, volume_id: str) -> None:
        self.store.delete_volume(volume_id)

    def resize_volume(self, volume_id: str, size_gb: int) -> base.Volume:
        return self.store.resize_volume(volume_id, size_gb)

    def create_snapshot(self, volume_id: str, snapshot: str) -> None:
        self.store.create_snapshot(volume_id, snapshot)

    def list_snapshots(self, volume_id: str) -> list[dict[str, Any]]:
        return self.store.list_snapshots(volume_id)

    def revert_to_snapshot(self, volume_id: str, snapshot: str) -> None:
        self.store.revert_to_snapshot(volume_id, snapshot)

    def delete_snapshot(self, volume_id: str, snapshot: str) -> None:
        self.store.delete_snapshot(volume_id, snapshot)

    def file_disk(self, volume: base.Volume) -> lvxml.Disk:
        """A ``type='file'`` disk of a volume file on a local or mounted file system."""
        return lvxml.Disk(
            type="file",
            device="disk",
            driver_name="qemu",
            driver_type=volume.format,
            source_file=volume.location,
            cache="none",
            discard="unmap",
        )
