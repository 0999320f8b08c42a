"""An NFS client for the ``nfs`` backend's ``direct`` mode: libnfs through ctypes.

The host mounts nothing: file operations (stat, list, rename, unlink,
chmod, statvfs, reads) go to the server over libnfs, the userspace NFSv3
client QEMU's own ``nfs`` block driver uses; image work goes through
``qemu-img`` with ``nfs://`` URLs.

NOTE: ctypes on the system's ``libnfs.so.13`` (Debian's libnfs13, which
qemu-block-extra already depends on), not the PyPI ``libnfs`` binding: the
binding has no ``nfs_set_timeout`` or ``statvfs``, ignores a failed mount,
and holds the GIL while it waits, so one dead server would freeze every
thread of the agent. ctypes releases the GIL during each call, and every
call here is bounded by ``nfs_set_timeout``.

One context per operation (libnfs contexts are not thread-safe, and a
fresh one has nothing to go stale when the server restarts).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from compute_driver import exception as cd_exception
from storage_backends import exception
from storage_backends.files import Header, ScannedFile, read_header

LIBRARY = "libnfs.so.13"
INSTALL_HINT = "apt-get install libnfs13 qemu-block-extra"

_UNAVAILABLE = {
    errno.ETIMEDOUT,
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENOTCONN,
    errno.EPIPE,
    errno.EIO,
    errno.EFAULT,  # libnfs' answer when the RPC layer gives up (a timeout)
}
_PERMISSION = {errno.EPERM, errno.EACCES, errno.EROFS}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class _Stat64(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "dev",
            "ino",
            "mode",
            "nlink",
            "uid",
            "gid",
            "rdev",
            "size",
            "blksize",
            "blocks",
            "atime",
            "mtime",
            "ctime",
            "atime_nsec",
            "mtime_nsec",
            "ctime_nsec",
            "used",
        )
    ]


class _Statvfs64(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "bsize",
            "frsize",
            "blocks",
            "bfree",
            "bavail",
            "files",
            "ffree",
            "favail",
            "fsid",
            "flag",
            "namemax",
        )
    ]


class _Timeval(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]


class _Dirent(ctypes.Structure):
    """The leading fields of ``struct nfsdirent`` (the rest is never read)."""


_Dirent._fields_ = [
    ("next", ctypes.POINTER(_Dirent)),
    ("name", ctypes.c_char_p),
    ("inode", ctypes.c_uint64),
    ("type", ctypes.c_uint32),
    ("mode", ctypes.c_uint32),
    ("size", ctypes.c_uint64),
]

_P = ctypes.c_void_p
_S = ctypes.c_char_p
_I = ctypes.c_int
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "nfs_init_context": (_P, []),
    "nfs_destroy_context": (None, [_P]),
    "nfs_set_timeout": (None, [_P, _I]),
    "nfs_set_uid": (None, [_P, _I]),
    "nfs_set_gid": (None, [_P, _I]),
    "nfs_set_tcp_syncnt": (None, [_P, _I]),
    "nfs_get_error": (_S, [_P]),
    "nfs_mount": (_I, [_P, _S, _S]),
    "nfs_umount": (_I, [_P]),
    "nfs_stat64": (_I, [_P, _S, ctypes.POINTER(_Stat64)]),
    "nfs_statvfs64": (_I, [_P, _S, ctypes.POINTER(_Statvfs64)]),
    "nfs_mkdir": (_I, [_P, _S]),
    "nfs_unlink": (_I, [_P, _S]),
    "nfs_rename": (_I, [_P, _S, _S]),
    "nfs_link": (_I, [_P, _S, _S]),
    "nfs_chmod": (_I, [_P, _S, _I]),
    "nfs_utimes": (_I, [_P, _S, ctypes.POINTER(_Timeval)]),
    "nfs_opendir": (_I, [_P, _S, ctypes.POINTER(_P)]),
    "nfs_readdir": (ctypes.POINTER(_Dirent), [_P, _P]),
    "nfs_closedir": (None, [_P, _P]),
    "nfs_open": (_I, [_P, _S, _I, ctypes.POINTER(_P)]),
    "nfs_close": (_I, [_P, _P]),
    "nfs_pread": (_I, [_P, _P, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p]),
}

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def library() -> ctypes.CDLL:
    """The loaded libnfs, with argument types set.

    :raises InvalidConfig: libnfs is not installed (with the package to install).
    """
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL(LIBRARY, use_errno=True)
            except OSError as exc:
                raise cd_exception.InvalidConfig(
                    reason="the nfs storage backend's direct mode needs %s (%s): %s"
                    % (LIBRARY, exc, INSTALL_HINT)
                ) from exc
            for name, (restype, argtypes) in _SIGNATURES.items():
                func = getattr(lib, name)
                func.restype, func.argtypes = restype, argtypes
            _lib = lib
        return _lib


@dataclass(frozen=True)
class Export:
    """Where the volumes are: ``nfs://server/export/directory``, and how long to wait."""

    backend: str
    server: str
    export: str
    #: A directory inside the export ('' for its root).
    directory: str
    #: Seconds one NFS request may take (the connection included).
    timeout: int
    #: Credentials (AUTH_SYS) the agent claims on the server.
    uid: int = 0
    gid: int = 0

    def path(self, name: str = "") -> str:
        """The path of ``name`` inside the mounted export (``/dir/name``)."""
        parts = [p for p in (self.directory, name) if p]
        return "/" + "/".join(parts)

    def url(self, name: str = "") -> str:
        """The ``nfs://`` URL of ``name`` for qemu-img (QEMU's NFS client)."""
        return "nfs://%s%s%s" % (self.server, self.export.rstrip("/"), self.path(name))

    def unavailable(self, operation: str, reason: str) -> exception.BackendUnavailable:
        return exception.BackendUnavailable(
            backend=self.backend,
            reason="NFS server %s (export %s) did not serve %s within %d s: %s"
            % (self.server, self.export, operation, self.timeout, reason),
        )


@dataclass(frozen=True)
class FileFacts:
    name: str
    size: int
    #: Bytes the server stores for it.
    used: int
    mode: int
    mtime: float


class Client:
    """One connected libnfs context; use :func:`connected`."""

    def __init__(self, lib: ctypes.CDLL, ctx: int, where: Export) -> None:
        self._lib, self._ctx, self.where = lib, ctx, where

    def _error(self, operation: str, name: str, status: int) -> Exception:
        code = -status
        text = (self._lib.nfs_get_error(self._ctx) or b"").decode("utf-8", "replace")
        reason = "%s (%s)" % (text or os.strerror(code), errno.errorcode.get(code, code))
        where = self.where
        if code in _UNAVAILABLE or "timed out" in text.lower() or "timeout" in text.lower():
            return where.unavailable("%s of %s" % (operation, name), reason)
        if code in _NO_SPACE:
            return exception.NoSpace(
                backend=where.backend, volume=name, needed="more", free="none (%s)" % reason
            )
        if code in _PERMISSION:
            return exception.PermissionDenied(
                backend=where.backend,
                operation=operation,
                volume=name,
                reason="NFS server %s refused it: %s; check the export's access and squash "
                "settings" % (where.server, reason),
            )
        return cd_exception.StorageError(
            operation="%s on NFS server %s" % (operation, where.server), volume=name, reason=reason
        )

    def _check(self, status: int, operation: str, name: str) -> int:
        if status < 0:
            raise self._error(operation, name, status)
        return status

    def stat(self, name: str) -> FileFacts | None:
        """Facts of ``name`` in the volume directory, or None if there is none."""
        st = _Stat64()
        status = self._lib.nfs_stat64(self._ctx, self._b(name), ctypes.byref(st))
        if status == -errno.ENOENT:
            return None
        self._check(status, "stat", name)
        return FileFacts(
            name=name,
            size=st.size,
            used=st.used or st.blocks * 512,
            mode=st.mode,
            mtime=st.mtime + st.mtime_nsec / 1e9,
        )

    def listdir(self, name: str = "") -> list[str]:
        """Names in the directory ``name`` (not ``.`` and ``..``)."""
        handle = _P()
        self._check(
            self._lib.nfs_opendir(self._ctx, self._b(name), ctypes.byref(handle)), "list", name
        )
        names = []
        try:
            while True:
                entry = self._lib.nfs_readdir(self._ctx, handle)
                if not entry:
                    break
                name = (entry.contents.name or b"").decode("utf-8", "surrogateescape")
                if name not in (".", ".."):
                    names.append(name)
        finally:
            self._lib.nfs_closedir(self._ctx, handle)
        return names

    def mkdir(self, name: str = "") -> None:
        """Make the directory (the volume directory itself for ``''``); existing is fine."""
        path = self.where.path(name).rstrip("/")
        if not path:
            return  # the export itself
        status = self._lib.nfs_mkdir(self._ctx, path.encode())
        if status not in (0, -errno.EEXIST):
            self._check(status, "mkdir", path)

    def unlink(self, name: str) -> bool:
        """Remove ``name``; False if it was not there."""
        status = self._lib.nfs_unlink(self._ctx, self._b(name))
        if status == -errno.ENOENT:
            return False
        self._check(status, "remove", name)
        return True

    def rename(self, src: str, dst: str) -> None:
        self._check(self._lib.nfs_rename(self._ctx, self._b(src), self._b(dst)), "rename", src)

    def link(self, src: str, dst: str) -> bool:
        """Give ``src`` the second name ``dst``; False if ``dst`` exists (never replaced)."""
        status = self._lib.nfs_link(self._ctx, self._b(src), self._b(dst))
        if status == -errno.EEXIST:
            return False
        self._check(status, "link", src)
        return True

    def chmod(self, name: str, mode: int) -> None:
        self._check(self._lib.nfs_chmod(self._ctx, self._b(name), mode), "chmod", name)

    def touch(self, name: str) -> None:
        """Set the times of ``name`` to now."""
        now = time.time()
        times = (_Timeval * 2)()
        for tv in times:
            tv.sec, tv.usec = int(now), int((now % 1) * 1e6)
        self._check(self._lib.nfs_utimes(self._ctx, self._b(name), times), "touch", name)

    def space(self) -> tuple[int, int]:
        """(total, free) bytes of the export's file system."""
        vfs = _Statvfs64()
        self._check(
            self._lib.nfs_statvfs64(self._ctx, self._b(""), ctypes.byref(vfs)), "statvfs", "/"
        )
        unit = vfs.frsize or vfs.bsize
        return vfs.blocks * unit, vfs.bavail * unit

    def pread(self, name: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of ``name`` from ``offset``."""
        fh = _P()
        self._check(
            self._lib.nfs_open(self._ctx, self._b(name), os.O_RDONLY, ctypes.byref(fh)),
            "open",
            name,
        )
        try:
            buf = ctypes.create_string_buffer(length)
            count = self._check(
                self._lib.nfs_pread(self._ctx, fh, offset, length, buf), "read", name
            )
            return buf.raw[:count]
        finally:
            self._lib.nfs_close(self._ctx, fh)

    def _b(self, name: str) -> bytes:
        return self.where.path(name).encode()


@contextlib.contextmanager
def connected(where: Export, operation: str) -> Iterator[Client]:
    """A client with the export mounted, every request bounded by ``where.timeout``.

    :raises BackendUnavailable: the server (named in the message) did not answer.
    :raises PermissionDenied: the server refused the mount.
    :raises InvalidConfig: libnfs is not installed.
    """
    lib = library()
    ctx = lib.nfs_init_context()
    if not ctx:
        raise cd_exception.StorageError(
            operation=operation, volume=where.url(), reason="libnfs could not make a context"
        )
    try:
        # NOTE: libnfs takes whole seconds; -1 (its default) waits forever.
        lib.nfs_set_timeout(ctx, max(1, where.timeout) * 1000)
        # A SYN to a host that drops packets: give up after 2 retries (~7 s
        # worst case) instead of the kernel's 6 (about 2 minutes).
        lib.nfs_set_tcp_syncnt(ctx, 2)
        lib.nfs_set_uid(ctx, where.uid)
        lib.nfs_set_gid(ctx, where.gid)
        status = lib.nfs_mount(ctx, where.server.encode(), where.export.encode())
        if status < 0:
            text = (lib.nfs_get_error(ctx) or b"").decode("utf-8", "replace")
            if -status in _PERMISSION or "ACCES" in text:
                raise exception.PermissionDenied(
                    backend=where.backend,
                    operation=operation,
                    volume=where.export,
                    reason="NFS server %s refused to mount %s: %s"
                    % (where.server, where.export, text),
                )
            raise where.unavailable(operation, "mount failed: %s" % (text or os.strerror(-status)))
        yield Client(lib, ctx, where)
    finally:
        lib.nfs_destroy_context(ctx)


#: qemu-img messages that mean the server did not answer (QEMU's NFS client).
_QEMU_UNAVAILABLE = (
    "took more than",
    "Failed to mount nfs share",
    "mount/mnt call failed",
    "Connection refused",
    "nfs_service failed",
    "RPC",
    "timed out",
)
#: The two directories of the layout, inside the export.
AREAS = {"volumes": "volumes", "images": "images"}


class NfsFiles:
    """A :class:`~storage_backends.files.Files` on an export reached with libnfs.

    NOTE: no locks: QEMU's image locks do not cross libnfs, so a guest's use
    of a volume is invisible here (``has_locks`` is False).
    """

    has_locks = False
    #: QEMU opens backing files over libnfs as its own user, without a label.
    file_mode = 0o644

    def __init__(self, where: Export, copy_timeout: int) -> None:
        self.where = where
        self.copy_timeout = copy_timeout
        self._ready = False

    def _name(self, area: str, name: str) -> str:
        return "%s/%s" % (AREAS[area], name)

    def check(self, operation: str) -> None:
        with connected(self.where, operation) as client:
            if not self._ready:
                client.mkdir()
                for area in AREAS.values():
                    client.mkdir(area)
                self._ready = True

    def location(self, area: str, name: str) -> str:
        return self.where.url(self._name(area, name))

    def _scanned(self, client: Client, area: str, name: str) -> ScannedFile | None:
        facts = client.stat(self._name(area, name))
        if facts is None or not stat.S_ISREG(facts.mode):
            return None
        path = self._name(area, name)
        try:
            header: Header | None = read_header(lambda o, n: client.pread(path, o, n), facts.size)
        except cd_exception.ComputeDriverError as exc:
            if isinstance(exc, exception.BackendUnavailable):
                raise
            header = None
        return ScannedFile(name, facts.size, facts.used, facts.mtime, header)

    def stat(self, area: str, name: str) -> ScannedFile | None:
        with connected(self.where, "stat") as client:
            return self._scanned(client, area, name)

    def scan(self, area: str) -> list[ScannedFile]:
        with connected(self.where, "scan") as client:
            found = []
            for name in sorted(client.listdir(AREAS[area])):
                scanned = self._scanned(client, area, name)
                if scanned is not None:
                    found.append(scanned)
            return found

    def read(self, area: str, name: str, offset: int, length: int) -> bytes:
        with connected(self.where, "read") as client:
            return client.pread(self._name(area, name), offset, length)

    def publish(self, area: str, tmp: str, name: str) -> bool:
        with connected(self.where, "publish") as client:
            try:
                return client.link(self._name(area, tmp), self._name(area, name))
            finally:
                client.unlink(self._name(area, tmp))

    def unlink(self, area: str, name: str) -> bool:
        with connected(self.where, "remove") as client:
            return client.unlink(self._name(area, name))

    def chmod(self, area: str, name: str, mode: int) -> None:
        with connected(self.where, "chmod") as client:
            client.chmod(self._name(area, name), mode)

    def touch(self, area: str, name: str) -> None:
        with connected(self.where, "touch") as client:
            client.touch(self._name(area, name))

    def space(self) -> tuple[int, int]:
        with connected(self.where, "statvfs") as client:
            return client.space()

    def unavailable(self, reason: str) -> Exception | None:
        if any(text in reason for text in _QEMU_UNAVAILABLE):
            return self.where.unavailable("qemu-img", reason)
        return None

    def timeout(self, copy: bool) -> float:
        return self.copy_timeout if copy else self.where.timeout
