"""Disk images: the one neutral place that reads and writes them.

The package has one module per job, and imports nothing of ours but the
exceptions, so the scheduler, the client, the drivers and the storage
backends can all use it (the bottom layer of the design):

- :mod:`.qemu_img`: the one ``qemu-img`` runner (``info`` and ``check``
  always under ``prlimit``);
- :mod:`.qcow2`: qcow2 headers read and written in-process (empty
  overlays, backing chains);
- this module: images from outside the cloud, opened without trusting a
  path, probed under resource limits, converted with their format forced,
  and the image store's layout.

An image file is hostile until proven otherwise (the class of
CVE-2015-5162 and OSSA-2024-001):

1. :func:`open_beneath` opens a file named *relative* to an operator's
   directory, one path component at a time, following no symlink and no
   ``..``, and takes regular files of one name only (no hard link, whose
   other name may lie outside; a FIFO, device or directory is refused
   before it is opened for reading, so nothing blocks).
2. :func:`copy_bounded` copies it into a private file of ours, counting
   bytes as they are read: a size that ``stat`` reports is never trusted
   (``/proc`` files say 0).
3. :func:`probe` runs ``qemu-img info --output=json`` on our copy under
   ``prlimit`` (1 GiB of address space, 30 s of CPU, as Nova's
   ``oslo_concurrency.prlimit`` does) and refuses backing files, external
   data files, VMDK extents other than the image itself, VMDK subformats
   outside ``[image] vmdk_allowed_types``, a format other than the one the
   caller claimed, absurd virtual sizes, and (``qemu-img check``) corrupt
   or truncated qcow2.
4. :func:`convert` runs ``qemu-img convert -f <probed format>``: the format
   is never guessed a second time.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from compute_driver import exception
from compute_driver.disk_image import qemu_img

#: Formats the image store keeps as they are.
STORE_FORMATS = ("qcow2", "raw")
#: Formats converted to qcow2 on import.
CONVERTED_FORMATS = ("vmdk", "vdi", "vhdx", "vpc", "qed")
#: Every format an import may name or contain.
KNOWN_FORMATS = STORE_FORMATS + CONVERTED_FORMATS
#: VMDK subformats whose data lives inside the one file (Nova's default
#: ``[image] vmdk_allowed_types``); the others name extent files.
DEFAULT_VMDK_TYPES = ("monolithicSparse", "streamOptimized")

#: Wall-clock bound of one probe (a probe that sleeps uses no CPU).
PROBE_TIMEOUT = 120
#: Wall-clock bound of one conversion (it copies a whole image).
CONVERT_TIMEOUT = 3600
_CHUNK = 4 * 1024 * 1024
#: ``qemu-img check`` exit statuses: 0 clean, 3 leaked clusters only (harmless).
_CHECK_OK = (0, 3)


@dataclass(frozen=True)
class Limits:
    """What an image may be."""

    #: Largest file, in bytes (``[image] max_image_gb``).
    max_bytes: int
    #: Largest disk the image describes, in bytes (``[image] max_virtual_gb``).
    max_virtual_bytes: int
    #: VMDK create-types accepted (``[image] vmdk_allowed_types``).
    vmdk_types: tuple[str, ...] = DEFAULT_VMDK_TYPES


@dataclass(frozen=True)
class ImageInfo:
    """What the probe found in a file."""

    format: str
    virtual_size: int
    #: ``qemu-img info --output=json`` as it said it.
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


def _refuse(image: str, reason: str) -> exception.InvalidImage:
    return exception.InvalidImage(image=image, reason=reason)


# --- opening ------------------------------------------------------------------


def check_relative_name(name: str, what: str = "file") -> list[str]:
    """The components of ``name``, a path relative to an import directory.

    :raises InvalidImage: absolute, empty, or with ``.``/``..`` components.
    """
    if not name or "\x00" in name:
        raise _refuse(name, "%s names no file" % what)
    if name.startswith("/"):
        raise _refuse(
            name, "%s must name a file relative to [image] import_path, not an absolute path" % what
        )
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _refuse(name, "%s may not contain '..', '.' or empty components" % what)
    return parts


def open_beneath(root: str, name: str, what: str = "file") -> int:
    """Open ``root/name`` for reading without following any symlink.

    Each component is looked up relative to the descriptor of the one
    before it with ``O_NOFOLLOW``; the last must be a regular file. A FIFO,
    device, socket or directory is refused after an ``lstat``, before any
    ``open`` that could block or have side effects; the descriptor opened
    is checked again to be that same regular file.

    :param root: the operator's directory (``[image] import_path``).
    :param what: how errors name the file ("file", "kernel", "initrd").
    :returns: a read-only descriptor; the caller closes it.
    :raises InvalidImage: any of the above, or a file that does not exist.
    """
    parts = check_relative_name(name, what)
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _refuse(
            name, "the import directory %s cannot be opened: %s" % (root, exc.strerror)
        ) from None
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(
                    part,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=dir_fd,
                )
            except OSError as exc:
                raise _open_error(name, what, exc) from None
            os.close(dir_fd)
            dir_fd = next_fd
        leaf = parts[-1]
        try:
            before = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            raise _open_error(name, what, exc) from None
        _require_regular(name, what, before)
        try:
            fd = os.open(
                leaf,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                dir_fd=dir_fd,
            )
        except OSError as exc:
            raise _open_error(name, what, exc) from None
        after = os.fstat(fd)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            os.close(fd)
            raise _refuse(name, "%s changed while it was opened" % what)
        _require_regular(name, what, after, fd)
        if after.st_nlink != 1:
            # NOTE: a hard link is no symlink, but its other name may lie
            # outside the import directory (a host file on the same mount).
            os.close(fd)
            raise _refuse(
                name,
                "%s is a hard link (%d names); only files of one name are imported"
                % (what, after.st_nlink),
            )
        return fd
    finally:
        os.close(dir_fd)


def _require_regular(name: str, what: str, st: os.stat_result, fd: int | None = None) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    if fd is not None:
        os.close(fd)
    if stat.S_ISLNK(st.st_mode):
        kind = "a symbolic link"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "a FIFO"
    elif stat.S_ISDIR(st.st_mode):
        kind = "a directory"
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "a device"
    else:
        kind = "not a regular file"
    raise _refuse(name, "%s is %s; only regular files are imported" % (what, kind))


def _open_error(name: str, what: str, exc: OSError) -> exception.InvalidImage:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        # NOTE: O_NOFOLLOW answers ELOOP for a symlink; O_DIRECTORY answers
        # ENOTDIR for a file in the middle of the name.
        return _refuse(
            name,
            "%s is, or lies under, a symbolic link or a file; symlinks are not followed" % what,
        )
    if exc.errno == errno.ENOENT:
        return _refuse(name, "%s does not exist in the import directory" % what)
    return _refuse(name, "%s cannot be opened: %s" % (what, exc.strerror))


def copy_bounded(fd: int, dest: str, max_bytes: int, image: str, what: str = "file") -> str:
    """Copy the open file ``fd`` to a new file ``dest`` (mode 0600), at most
    ``max_bytes`` bytes, counted while read.

    The copy must also have the length the file had when opened: a file
    that grows, shrinks or (like ``/proc`` files) reports a size it does
    not have is refused.

    :returns: the SHA-256 of the bytes copied, in hex.
    :raises InvalidImage: too large, or changed while read; ``dest`` is removed.
    """
    expected = os.fstat(fd).st_size
    if expected > max_bytes:
        raise _refuse(
            image, "%s has %d bytes, more than the %d allowed" % (what, expected, max_bytes)
        )
    digest = hashlib.sha256()
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        copied = 0
        while chunk := os.read(fd, _CHUNK):
            copied += len(chunk)
            if copied > max_bytes:
                raise _refuse(image, "%s has more than the %d bytes allowed" % (what, max_bytes))
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
        if copied != expected:
            raise _refuse(
                image,
                "%s said it had %d bytes but %d were read (a changing or special file)"
                % (what, expected, copied),
            )
        os.fsync(out)
    except BaseException:
        os.close(out)
        os.unlink(dest)
        raise
    os.close(out)
    return digest.hexdigest()


def file_checksum(path: str) -> str:
    """SHA-256 of a file of ours, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- probing ------------------------------------------------------------------


def claimed_format(name: str) -> str | None:
    """The format a file's name claims (``disk.vmdk`` claims vmdk), or None."""
    ext = os.path.splitext(name)[1].lstrip(".").lower()
    return ext if ext in KNOWN_FORMATS else None


def _invalid(image: str) -> qemu_img.Error:
    """The runner's errors (not installed, too slow) as :class:`InvalidImage`."""

    def error(operation: str, reason: str) -> Exception:
        return _refuse(image, "%s: %s" % (operation, reason))

    return error


def qemu_img_info(path: str, image: str, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` of a file of ours, resource-limited.

    :param fmt: read it as this format; None lets qemu-img detect it (only
        the first probe of a new file does that).
    :raises InvalidImage: qemu-img cannot read it, or ran out of its limits.
    """
    args = ["info", "--output=json"]
    if fmt is not None:
        args += ["-f", fmt]
    done = qemu_img.execute([*args, "--", path], _invalid(image), PROBE_TIMEOUT)
    if done.returncode != 0:
        raise _refuse(image, "not a disk image qemu-img can read: %s" % qemu_img.failure(done))
    try:
        info = json.loads(done.stdout)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise _refuse(image, "qemu-img info gave no JSON object")
    return info


def probe(path: str, image: str, limits: Limits, claimed: str | None = None) -> ImageInfo:
    """Probe a file of ours and refuse anything that reaches outside it.

    :param path: our private copy (never a path a caller named).
    :param image: the image's name, for errors.
    :param claimed: the format the caller says it is; the content must agree.
    :raises InvalidImage: with the reason, for every refusal listed in the
        module docstring.
    """
    info = qemu_img_info(path, image)
    found = info.get("format")
    if found not in KNOWN_FORMATS:
        raise _refuse(
            image,
            "format %s is not one of %s" % (found, ", ".join(KNOWN_FORMATS)),
        )
    if claimed is not None and claimed != found:
        # NOTE: a "raw" image whose first bytes are a qcow2 header would be
        # read as qcow2 by anything that guesses: the claim and the content
        # must agree, and every later step forces the format.
        raise _refuse(image, "it is said to be %s but its content is %s" % (claimed, found))
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise _refuse(image, "images with a backing file are refused")
    if info.get("encrypted"):
        raise _refuse(image, "encrypted images are refused")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if not isinstance(specific, dict):
        raise _refuse(image, "qemu-img info gave odd format-specific data")
    if specific.get("data-file"):
        raise _refuse(image, "images with an external data file are refused")
    if found == "vmdk":
        _check_vmdk(image, info, specific, limits)
    virtual = info.get("virtual-size")
    if not isinstance(virtual, int) or virtual < 0:
        raise _refuse(image, "qemu-img info reports no virtual size")
    if virtual > limits.max_virtual_bytes:
        raise _refuse(
            image,
            "virtual size %d bytes is more than the %d allowed ([image] max_virtual_gb)"
            % (virtual, limits.max_virtual_bytes),
        )
    if found == "qcow2":
        _check_qcow2(path, image)
    return ImageInfo(format=found, virtual_size=virtual, raw=info)


def _check_vmdk(image: str, info: dict[str, Any], specific: dict[str, Any], limits: Limits) -> None:
    create_type = specific.get("create-type")
    if create_type not in limits.vmdk_types:
        raise _refuse(
            image,
            "VMDK create-type %s is not one of %s ([image] vmdk_allowed_types)"
            % (create_type, ", ".join(limits.vmdk_types)),
        )
    own = info.get("filename")
    for extent in specific.get("extents") or []:
        # NOTE: a monolithic VMDK's one extent is the file itself; any other
        # name is a file on this host that a conversion would read.
        if not isinstance(extent, dict) or extent.get("filename") != own:
            raise _refuse(image, "VMDK extents outside the image file are refused")


def _check_qcow2(path: str, image: str) -> None:
    args = ["check", "--output=json", "-f", "qcow2", "--", path]
    done = qemu_img.execute(args, _invalid(image), PROBE_TIMEOUT)
    if done.returncode not in _CHECK_OK:
        if done.returncode == 2:
            reason = "a corrupt or truncated qcow2 (qemu-img check found errors)"
        else:
            reason = "qemu-img check failed: %s" % qemu_img.failure(done)
        raise _refuse(image, reason)


# --- converting ---------------------------------------------------------------


def convert(src: str, src_format: str, dest: str, image: str) -> None:
    """``qemu-img convert -f SRC_FORMAT -O qcow2 SRC DEST``; ``dest`` ends 0600.

    ``src`` is a file of ours that :func:`probe` accepted as ``src_format``;
    ``dest`` a path we chose. On failure ``dest`` is removed.

    :raises InvalidImage: qemu-img failed.
    """
    if src_format not in KNOWN_FORMATS:
        raise _refuse(image, "format %s cannot be converted" % src_format)
    args = ["convert", "-q", "-f", src_format, "-O", "qcow2", "--", src, dest]
    try:
        done = qemu_img.execute(args, _invalid(image), CONVERT_TIMEOUT)
        if done.returncode != 0:
            raise _refuse(image, "qemu-img convert failed: %s" % qemu_img.failure(done))
        os.chmod(dest, 0o600)
    except BaseException:
        try:
            os.unlink(dest)
        except FileNotFoundError:
            pass
        raise


# --- the image store's layout ---------------------------------------------------
#
# NOTE: the scheduler writes the store and agents read it (a shared mount with
# several hosts); both derive every path from the store root and an image's
# UUID with these functions, so no message ever carries a path.

#: Name of an export's disk inside its work directory.
EXPORT_DISK = "disk.qcow2"
_HEX = frozenset("0123456789abcdef")


def _check_uuid(uuid: str) -> str:
    parts = uuid.split("-")
    if [len(p) for p in parts] != [8, 4, 4, 4, 12] or not set("".join(parts)) <= _HEX:
        raise _refuse(uuid, "not an image UUID")
    return uuid


def image_dir(root: str, uuid: str) -> str:
    """The directory of image ``uuid`` in the store at ``root``."""
    return os.path.join(root, _check_uuid(uuid))


def stored_disk(root: str, uuid: str, disk_format: str) -> str:
    """The disk file of image ``uuid`` (``disk.qcow2`` or ``disk.raw``)."""
    if disk_format not in STORE_FORMATS:
        raise _refuse(uuid, "the store keeps no %s disks" % disk_format)
    return os.path.join(image_dir(root, uuid), "disk." + disk_format)


def stored_file(root: str, uuid: str, name: str) -> str:
    """The ``kernel`` or ``initrd`` of image ``uuid``."""
    if name not in ("kernel", "initrd"):
        raise _refuse(uuid, "the store keeps no %s files" % name)
    return os.path.join(image_dir(root, uuid), name)


def export_dir(root: str, uuid: str) -> str:
    """The work directory where an agent writes the disk of new image ``uuid``."""
    return os.path.join(root, ".export-" + _check_uuid(uuid))
