"""Where a file-based backend's volumes are, and what their files say about themselves.

The ``dir`` and ``nfs`` backends share :class:`~storage_backends.filestore.FileStore`;
this module holds what it reads and where: the qcow2 header fields it needs
(:func:`read_header`, :func:`read_snapshots`), the :class:`Files` interface
of a place for volume files and cached images (:class:`LocalFiles` here; the
``nfs`` backend brings its own), the volume options both backends declare,
and the test of QEMU's image locks that a delete makes (:func:`qemu_lock_held`).
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from oslo_config import cfg

from compute_driver.disk_image import qemu_img

VOLUME_FORMATS = ("qcow2", "raw")


def volume_opts(group: str) -> list[cfg.Opt]:
    """The options of a file-based backend's volumes (new objects for each group)."""
    return [
        cfg.StrOpt(
            "volume_format",
            default="qcow2",
            choices=VOLUME_FORMATS,
            help="Format of new empty volumes and of full (not linked) copies of images. "
            "qcow2 has snapshots and grows as it is written; raw is faster but has no "
            "snapshots. Root disks made as linked clones are always qcow2 overlays. "
            "Related options: [%s] preallocation." % group,
        ),
        cfg.StrOpt(
            "preallocation",
            default="off",
            choices=("off", "metadata", "falloc", "full"),
            help="Space reserved when a volume is made or grown. off: thin (qcow2) or "
            "sparse (raw); metadata: qcow2 tables written ahead (qcow2 only); falloc: "
            "blocks reserved but not written; full: zeros written (slow). Linked clones "
            "stay thin. A volume that does not fit is refused with storage_no_space. "
            "Related options: [%s] volume_format." % group,
        ),
        cfg.IntOpt(
            "image_cache_min_age",
            default=86400,
            min=0,
            help="Seconds a cached image must have gone unused (no volume made from it) "
            "before cleanup_image_cache may remove it; a cached image any volume backs "
            "onto is never removed. With volumes shared by several hosts, keep it longer "
            "than the longest volume creation.",
        ),
    ]


# --- qcow2 headers --------------------------------------------------------

_QCOW2_MAGIC = b"QFI\xfb"
_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")
_SNAPSHOT = struct.Struct(">QIHHIIQII")
#: Largest snapshot table read (about 10,000 snapshots).
_MAX_SNAPSHOT_TABLE = 1024**2


@dataclass(frozen=True)
class Header:
    """What a volume or cached image file says about itself."""

    format: str
    virtual_size: int
    #: The backing file as written in the file ('' for none).
    backing: str = ""
    nb_snapshots: int = 0
    snapshots_offset: int = 0


def read_header(read: Callable[[int, int], bytes], file_size: int) -> Header:
    """Header of a qcow2 file, or a raw one (``file_size`` bytes) if not qcow2.

    :param read: ``read(offset, length)`` of the file.
    """
    head = read(0, _HEADER.size)
    if len(head) < _HEADER.size or head[:4] != _QCOW2_MAGIC:
        return Header(format="raw", virtual_size=file_size)
    fields = _HEADER.unpack(head)
    backing_offset, backing_size, size = fields[2], fields[3], fields[5]
    backing = ""
    if backing_offset and backing_size:
        backing = read(backing_offset, min(backing_size, 4096)).decode("utf-8", "replace")
    return Header(
        format="qcow2",
        virtual_size=size,
        backing=backing,
        nb_snapshots=fields[11],
        snapshots_offset=fields[12],
    )


def read_snapshots(read: Callable[[int, int], bytes], header: Header) -> list[dict[str, Any]]:
    """The internal snapshots of a qcow2 file: ``name``, ``size`` (its disk
    size when taken), ``date`` (seconds), in table order (oldest first)."""
    if header.format != "qcow2" or not header.nb_snapshots:
        return []
    table = read(header.snapshots_offset, min(_MAX_SNAPSHOT_TABLE, 64 * 1024))
    found = []
    pos = 0
    for _ in range(header.nb_snapshots):
        if pos + _SNAPSHOT.size > len(table) and len(table) < _MAX_SNAPSHOT_TABLE:
            table = read(header.snapshots_offset, _MAX_SNAPSHOT_TABLE)
        if pos + _SNAPSHOT.size > len(table):
            break
        (_, _, id_size, name_size, date_sec, date_nsec, _, _, extra_size) = _SNAPSHOT.unpack_from(
            table, pos
        )
        start = pos
        pos += _SNAPSHOT.size
        extra = table[pos : pos + extra_size]
        pos += extra_size + id_size
        name = table[pos : pos + name_size].decode("utf-8", "replace")
        pos += name_size
        pos += -(pos - start) % 8
        # NOTE: qcow2 v3 keeps the disk size of each snapshot in its extra
        # data; older files do not (then the current size is the best guess).
        size = struct.unpack(">Q", extra[8:16])[0] if len(extra) >= 16 else header.virtual_size
        found.append({"name": name, "size": size, "date": date_sec + date_nsec / 1e9})
    return found


@dataclass(frozen=True)
class ScannedFile:
    name: str
    #: Bytes in the file (its length), and bytes the storage keeps for it.
    size: int
    used: int
    mtime: float
    #: None if it could not be read.
    header: Header | None


# --- where the files are --------------------------------------------------


class Files(Protocol):
    """The two directories of a :class:`FileStore`: ``volumes`` and ``images``."""

    #: Whether QEMU's image locks work here (a guest's use of a file is visible).
    has_locks: bool
    #: Mode of published volumes: 0600 where libvirt labels each volume for
    #: QEMU; 0644 where QEMU opens them as its own user without a label (NFS).
    file_mode: int

    def check(self, operation: str) -> None:
        """:raises BackendUnavailable: the storage cannot be reached."""

    def location(self, area: str, name: str) -> str:
        """What qemu-img and QEMU open for ``name`` (a path or a URL)."""

    def stat(self, area: str, name: str) -> ScannedFile | None:
        """The file ``name`` with its header, or None if there is none."""

    def scan(self, area: str) -> list[ScannedFile]:
        """Every file of ``area`` (headers read where possible)."""

    def read(self, area: str, name: str, offset: int, length: int) -> bytes: ...

    def publish(self, area: str, tmp: str, name: str) -> bool:
        """Give ``tmp`` the name ``name`` unless that exists (then remove
        ``tmp`` and return False). Never replaces a file."""

    def unlink(self, area: str, name: str) -> bool:
        """Remove ``name``; False if it was not there."""

    def chmod(self, area: str, name: str, mode: int) -> None: ...

    def touch(self, area: str, name: str) -> None: ...

    def space(self) -> tuple[int, int]:
        """(total, free) bytes where the volumes are."""

    def unavailable(self, reason: str) -> Exception | None:
        """The error for a qemu-img failure ``reason`` that means the storage
        cannot be reached, or None."""

    def timeout(self, copy: bool) -> float:
        """Seconds a qemu-img run may take (``copy``: a conversion)."""


class LocalFiles:
    """Files in local directories (or on a file system mounted on the host).

    :param cache_headers: keep each file's header while its inode, size,
        mtime and ctime stay the same, so that the periodic capacity scan
        (:meth:`scan_reusing_headers`) reads no file that has not changed.
        Only where this host sees every change as it happens (a local file
        system).
    """

    has_locks = True

    #: Tenant data, readable by the services only (issue 12); libvirt's
    #: dynamic ownership labels the files a domain opens for QEMU.
    file_mode = 0o600

    def __init__(self, volumes: str, images: str, cache_headers: bool = False) -> None:
        self.dirs = {"volumes": volumes, "images": images}
        self.cache_headers = cache_headers
        # (area, name) -> (identity of the file when read, its header)
        self._headers: dict[tuple[str, str], tuple[tuple[int, ...], Header | None]] = {}
        self._headers_lock = threading.Lock()

    def check(self, operation: str) -> None:
        for path in self.dirs.values():
            # NOTE: one stat where the directory is there (every call but the
            # first): makedirs would try a mkdir and handle its EEXIST.
            if not os.path.isdir(path):
                # NOTE: 0711: QEMU traverses to the files labelled for it; only
                # the services list them.
                os.makedirs(path, mode=0o711, exist_ok=True)

    def location(self, area: str, name: str) -> str:
        return os.path.join(self.dirs[area], name)

    def _stat(self, area: str, name: str, reuse: bool) -> ScannedFile | None:
        path = self.location(area, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        # NOTE: any write changes the mtime (and ctime), a replacement the
        # inode: a header kept for the same identity is what a read would give.
        identity = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = self._headers.get((area, name)) if reuse else None
        if known is not None and known[0] == identity:
            header = known[1]
        else:
            try:
                header = read_header(lambda o, n: self.read(area, name, o, n), st.st_size)
            except OSError:
                header = None
            if reuse and header is not None:
                self._headers[(area, name)] = (identity, header)
        return ScannedFile(name, st.st_size, st.st_blocks * 512, st.st_mtime, header)

    def stat(self, area: str, name: str) -> ScannedFile | None:
        return self._stat(area, name, reuse=False)

    def scan(self, area: str) -> list[ScannedFile]:
        return self._scan(area, reuse=False)

    def scan_reusing_headers(self, area: str) -> list[ScannedFile]:
        """:meth:`scan`, reading only the headers of files that changed since the last such scan.

        For the capacity report, which runs every few seconds; anything that
        decides what to remove (cleanup_image_cache) reads every file afresh.
        """
        with self._headers_lock:
            found = self._scan(area, reuse=self.cache_headers)
            present = {s.name for s in found}
            for key in [k for k in self._headers if k[0] == area and k[1] not in present]:
                del self._headers[key]  # gone
        return found

    def _scan(self, area: str, reuse: bool) -> list[ScannedFile]:
        found = []
        for name in sorted(os.listdir(self.dirs[area])):
            scanned = self._stat(area, name, reuse)
            if scanned is not None and os.path.isfile(self.location(area, name)):
                found.append(scanned)
        return found

    def read(self, area: str, name: str, offset: int, length: int) -> bytes:
        with open(self.location(area, name), "rb") as f:
            return os.pread(f.fileno(), length, offset)

    def publish(self, area: str, tmp: str, name: str) -> bool:
        try:
            # NOTE: link, not rename: it fails if the name exists, where a
            # rename would silently replace a file a guest may have open.
            os.link(self.location(area, tmp), self.location(area, name))
        except FileExistsError:
            return False
        finally:
            self.unlink(area, tmp)
        return True

    def unlink(self, area: str, name: str) -> bool:
        try:
            os.unlink(self.location(area, name))
        except FileNotFoundError:
            return False
        return True

    def chmod(self, area: str, name: str, mode: int) -> None:
        os.chmod(self.location(area, name), mode)

    def touch(self, area: str, name: str) -> None:
        os.utime(self.location(area, name))

    def space(self) -> tuple[int, int]:
        st = os.statvfs(self.dirs["volumes"])
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def unavailable(self, reason: str) -> Exception | None:
        return None

    def timeout(self, copy: bool) -> float:
        return qemu_img.TIMEOUT


# --- QEMU's image locks -------------------------------------------------------

#: QEMU's lock bytes (block/file-posix.c: one byte per permission at 100 +
#: bit) whose holder makes ``qemu-img info`` without ``-U`` refuse the image:
#: "write" (bit 1) and "resize" (bit 3), which every writer such as a running
#: guest holds. The unit tests check, byte by byte, that qemu-img agrees.
QEMU_BUSY_LOCK_BYTES = (101, 103)
#: ``struct flock`` on Linux: l_type, l_whence, l_start, l_len, l_pid.
_FLOCK = struct.Struct("hhqqi4x")


def qemu_lock_held(path: str) -> bool:
    """Whether another process holds QEMU's lock on ``path`` as a writer does.

    What ``qemu-img info`` (without ``-U``) checks before it opens an image,
    in-process: one ``F_OFD_GETLK`` per byte of :data:`QEMU_BUSY_LOCK_BYTES`
    (QEMU takes open file description locks; a test for a write lock finds
    any other holder, never our own).

    :raises OSError: ``path`` cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for offset in QEMU_BUSY_LOCK_BYTES:
            query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
            if _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK, query))[0] != fcntl.F_UNLCK:
                return True
        return False
    finally:
        os.close(fd)
