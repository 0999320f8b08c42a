"""Empty qcow2 overlays written in-process, byte for byte as ``qemu-img create`` writes them.

A new overlay on a backing file is four small structures: the header (with
its extensions and the backing file name) in cluster 0, a one-entry
refcount table in cluster 1, one refcount block in cluster 2, and an empty
L1 table in cluster 3. :func:`overlay` builds exactly what

    qemu-img create -f qcow2 -F <backing_format> -b <backing> <file> <size>

writes with its defaults (qcow2 v3 "compat 1.1", 64 KiB clusters, 16-bit
refcounts, zlib compression, no lazy refcounts, no extended L2), for the
common case only: :func:`fits` says when that is; for anything else, run
qemu-img. The unit tests compare the bytes with qemu-img's and run
``qemu-img check`` on the result.

NOTE: this replaces a subprocess per root disk (a fork of the agent, an
exec and QEMU's start-up: about 6 ms of CPU) by one write.
"""

from __future__ import annotations

import os
import struct

CLUSTER_BITS = 16
CLUSTER_SIZE = 1 << CLUSTER_BITS
#: L2 entries per cluster: one L1 entry maps this many bytes.
_BYTES_PER_L1_ENTRY = CLUSTER_SIZE * (CLUSTER_SIZE // 8)
#: qemu-img refuses longer backing file names.
MAX_BACKING_NAME = 1023
#: Backing formats this writer names (qemu-img checks any other).
BACKING_FORMATS = ("qcow2", "raw")

_MAGIC = b"QFI\xfb"
_VERSION = 3
_HEADER_LENGTH = 112
_REFCOUNT_ORDER = 4  # 16-bit refcounts
# magic, version, backing_file_offset, backing_file_size, cluster_bits, size,
# crypt_method, l1_size, l1_table_offset, refcount_table_offset,
# refcount_table_clusters, nb_snapshots, snapshots_offset, incompatible,
# compatible and autoclear features, refcount_order, header_length,
# compression_type (then 7 bytes of padding to header_length).
_HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQIIB7x")
_EXT = struct.Struct(">II")
_EXT_BACKING_FORMAT = 0xE2792ACA
_EXT_FEATURE_TABLE = 0x6803F857
_FEATURE = struct.Struct(">BB46s")
#: The feature name table qemu-img writes into every new image (type, bit, name).
_FEATURE_NAMES = (
    (0, 0, b"dirty bit"),
    (0, 1, b"corrupt bit"),
    (0, 2, b"external data file"),
    (0, 3, b"compression type"),
    (0, 4, b"extended L2 entries"),
    (1, 0, b"lazy refcounts"),
    (2, 0, b"bitmaps"),
    (2, 1, b"raw external data"),
)
_REFCOUNT_TABLE_OFFSET = 1 * CLUSTER_SIZE
_REFCOUNT_BLOCK_OFFSET = 2 * CLUSTER_SIZE
_L1_TABLE_OFFSET = 3 * CLUSTER_SIZE


def _l1_size(size: int) -> int:
    return -(-size // _BYTES_PER_L1_ENTRY)


def fits(size: int, backing: str, backing_format: str) -> bool:
    """Whether :func:`overlay` can write this overlay (else use qemu-img).

    The common case: a positive size in whole 512-byte sectors whose L1
    table fits in one cluster (up to 4 TiB), a backing file named by an
    absolute path of at most 1023 bytes, in a format this writer names.
    """
    name = backing.encode("utf-8", "surrogateescape")
    return (
        0 < size
        and size % 512 == 0
        and _l1_size(size) * 8 <= CLUSTER_SIZE
        and backing_format in BACKING_FORMATS
        and os.path.isabs(backing)
        and 0 < len(name) <= MAX_BACKING_NAME
        and b"\0" not in name
    )


def _extension(kind: int, data: bytes) -> bytes:
    return _EXT.pack(kind, len(data)) + data + b"\0" * (-len(data) % 8)


def overlay(size: int, backing: str, backing_format: str) -> bytes:
    """The whole file of an empty qcow2 overlay of ``size`` bytes on ``backing``.

    :raises ValueError: not a case :func:`fits` accepts.
    """
    if not fits(size, backing, backing_format):
        raise ValueError(
            "no in-process overlay of %d bytes on %r (%s): use qemu-img"
            % (size, backing, backing_format)
        )
    name = backing.encode("utf-8", "surrogateescape")
    extensions = (
        _extension(_EXT_BACKING_FORMAT, backing_format.encode("ascii"))
        + _extension(
            _EXT_FEATURE_TABLE,
            b"".join(_FEATURE.pack(kind, bit, text) for kind, bit, text in _FEATURE_NAMES),
        )
        + _EXT.pack(0, 0)  # end of the extensions
    )
    backing_offset = _HEADER_LENGTH + len(extensions)
    l1_size = _l1_size(size)
    header = _HEADER.pack(
        _MAGIC,
        _VERSION,
        backing_offset,
        len(name),
        CLUSTER_BITS,
        size,
        0,  # no encryption
        l1_size,
        _L1_TABLE_OFFSET,
        _REFCOUNT_TABLE_OFFSET,
        1,  # refcount table clusters
        0,  # snapshots
        0,
        0,  # incompatible features
        0,  # compatible features
        0,  # autoclear features
        _REFCOUNT_ORDER,
        _HEADER_LENGTH,
        0,  # compression type: zlib
    )
    data = bytearray(_L1_TABLE_OFFSET + l1_size * 8)
    cluster0 = header + extensions + name
    data[: len(cluster0)] = cluster0
    struct.pack_into(">Q", data, _REFCOUNT_TABLE_OFFSET, _REFCOUNT_BLOCK_OFFSET)
    # The header, the refcount table, the refcount block and the L1 table: one reference each.
    struct.pack_into(">4H", data, _REFCOUNT_BLOCK_OFFSET, 1, 1, 1, 1)
    return bytes(data)


def write_overlay(path: str, size: int, backing: str, backing_format: str) -> None:
    """Create (or truncate) ``path`` as an empty overlay, on disk when this returns.

    NOTE: synced like qemu-img's (it syncs several times): a guest defined
    on it must find it after a host crash.

    :raises ValueError: not a case :func:`fits` accepts (nothing is written).
    :raises OSError: the write failed (``path`` may be left partly written).
    """
    data = overlay(size, backing, backing_format)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)
    finally:
        os.close(fd)


#: Layers :func:`backing_chain` follows at most (qemu's own limit is 16 levels of nesting).
MAX_CHAIN = 64
#: Bytes of a qcow2 header that hold the backing file's offset and length.
_CHAIN_HEADER = struct.Struct(">4sIQI")


def _has_protocol(name: str) -> bool:
    """Whether qemu reads ``name`` as ``protocol:...`` (a ':' before any '/')."""
    head = name.split("/", 1)[0]
    return ":" in head


def backing_chain(top: str) -> list[str] | None:
    """The files of the qcow2 backing chain from ``top`` (top first), read from their headers.

    The names are what ``qemu-img info --backing-chain`` reports as each
    layer's ``filename``: a relative backing name is joined to the directory
    of the file that names it, as qemu does (no normalisation).

    NOTE: for the common chains only (qcow2 v2/v3 layers named by plain
    paths, ending in a qcow2 file without a backing file): for anything else
    (a raw or other format layer, a protocol or ``json:`` name, a missing
    file, a chain longer than :data:`MAX_CHAIN`) this returns None and the
    caller asks qemu-img, which probes formats and reports errors.
    """
    chain: list[str] = []
    path = top
    while len(chain) < MAX_CHAIN:
        chain.append(path)
        try:
            with open(path, "rb") as f:
                head = f.read(_CHAIN_HEADER.size)
                if len(head) < _CHAIN_HEADER.size:
                    return None
                magic, version, offset, length = _CHAIN_HEADER.unpack(head)
                if magic != _MAGIC or version not in (2, 3):
                    return None
                if not offset or not length:
                    return chain
                if length > MAX_BACKING_NAME:
                    return None
                f.seek(offset)
                raw = f.read(length)
        except OSError:
            return None
        if len(raw) != length or b"\0" in raw:
            return None
        name = raw.decode("utf-8", "surrogateescape")
        if _has_protocol(name):
            return None
        path = name if os.path.isabs(name) else os.path.join(os.path.dirname(path), name)
    return None
