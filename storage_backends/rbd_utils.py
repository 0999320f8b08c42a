"""librados/librbd helpers of the ``rbd`` backend.

Connections with a bound on every wait, cluster errors turned into our typed
errors, the monitors' addresses, the clone depth of an image, and writing a
local raw file into an RBD image without its holes.

NOTE: the bindings (``rados``, ``rbd``) come from Debian's python3-rados and
python3-rbd only (PyPI has none). They are imported softly so that reading
the configuration, which lists every plugin's options, works on hosts that
do not use Ceph.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from compute_driver import exception as cd_exception
from compute_driver.disk_image import qemu_img
from storage_backends import exception

try:
    import rados
    import rbd
except ImportError:  # pragma: no cover - depends on the host's packages
    rados = None
    rbd = None

LOG = logging.getLogger(__name__)

#: Bytes read and written at a time when importing: one RBD object (order 22).
CHUNK = 4 * 1024 * 1024
_ZERO_CHUNK = bytes(CHUNK)

_PERMISSION = {errno.EPERM, errno.EACCES}
_UNAVAILABLE = {
    errno.ETIMEDOUT,
    errno.ESHUTDOWN,
    errno.ENOTCONN,
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


@dataclass(frozen=True)
class ClusterSettings:
    """How to reach the cluster: everything but the key, which stays in ``keyring``."""

    backend: str
    conffile: str
    user: str
    keyring: str | None
    pool: str
    connect_timeout: int
    op_timeout: int

    @property
    def entity(self) -> str:
        return "client." + self.user

    def rados_conf(self) -> dict[str, str]:
        """librados options: a bound on every wait, and the keyring path."""
        # NOTE: Rados.connect(timeout=) is ignored by the Pacific binding (a
        # dead monitor made it wait the default 300 s): client_mount_timeout
        # is what bounds the connection.
        conf = {
            "client_mount_timeout": str(self.connect_timeout),
            "rados_mon_op_timeout": str(self.op_timeout),
            "rados_osd_op_timeout": str(self.op_timeout),
        }
        if self.keyring:
            conf["keyring"] = self.keyring
        return conf


def require_bindings() -> None:
    """:raises InvalidConfig: python3-rados / python3-rbd are not importable."""
    if rados is None or rbd is None:
        raise cd_exception.InvalidConfig(
            reason="the rbd storage backend needs the Ceph Python bindings: install Debian's "
            "python3-rados and python3-rbd, and use a venv made with --system-site-packages"
        )


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    return abs(code) if isinstance(code, int) else None


def storage_error(
    exc: BaseException, settings: ClusterSettings, operation: str, volume: str
) -> cd_exception.ComputeDriverError:
    """Our typed error for a librados/librbd error, by its errno.

    The message names the cephx user, the pool and the keyring path; it
    never holds a key (librados' own messages hold none either).
    """
    code = _errno_of(exc)
    if code in _PERMISSION:
        return exception.PermissionDenied(
            backend=settings.backend,
            operation=operation,
            volume=volume,
            reason="cephx user %s may not do this in pool %s (%s); check its key in %s and "
            "its caps with 'ceph auth get %s'"
            % (
                settings.entity,
                settings.pool,
                exc,
                settings.keyring or "the default keyring",
                settings.entity,
            ),
        )
    if code in _UNAVAILABLE:
        return exception.BackendUnavailable(
            backend=settings.backend,
            reason="%s on %s: the cluster of %s did not answer within %s s (%s)"
            % (operation, volume, settings.conffile, settings.op_timeout, exc),
        )
    if code in _NO_SPACE:
        return exception.NoSpace(
            backend=settings.backend, volume=volume, needed="more", free="none (%s)" % exc
        )
    if code == errno.EBUSY:
        return exception.VolumeBusy(
            backend=settings.backend,
            volume=volume,
            reason="%s: it is open by a client, such as a running guest (%s)" % (operation, exc),
        )
    return cd_exception.StorageError(operation=operation, volume=volume, reason=str(exc))


@contextlib.contextmanager
def translated(settings: ClusterSettings, operation: str, volume: str) -> Iterator[None]:
    """Turn librados/librbd errors raised inside into our typed errors."""
    try:
        yield
    except (rados.Error, rbd.Error) as exc:
        raise storage_error(exc, settings, operation, volume) from exc


@contextlib.contextmanager
def connected(settings: ClusterSettings, operation: str, volume: str) -> Iterator[Any]:
    """A connected ``rados.Rados``, shut down on exit.

    One connection per operation, as Nova and Cinder do: nothing to go stale
    when the cluster restarts, and a dead cluster costs each call at most
    ``connect_timeout`` seconds.

    :raises BackendUnavailable: no monitor answered within ``connect_timeout``.
    :raises PermissionDenied: cephx refused the user or its key.
    """
    with translated(settings, operation, volume):
        client = rados.Rados(
            rados_id=settings.user, conffile=settings.conffile, conf=settings.rados_conf()
        )
    try:
        try:
            client.connect(timeout=settings.connect_timeout)
        except rados.Error as exc:
            code = _errno_of(exc)
            if code in _PERMISSION:
                raise exception.PermissionDenied(
                    backend=settings.backend,
                    operation=operation,
                    volume=volume,
                    reason="cephx authentication of %s failed (%s); check the key in %s"
                    % (settings.entity, exc, settings.keyring or "the default keyring"),
                ) from exc
            if code == errno.ENOENT:
                raise cd_exception.InvalidConfig(
                    reason="rbd backend: no key for %s (%s); is [rbd] keyring %s right?"
                    % (settings.entity, exc, settings.keyring)
                ) from exc
            raise exception.BackendUnavailable(
                backend=settings.backend,
                reason="no monitor of %s answered within %s s (%s)"
                % (settings.conffile, settings.connect_timeout, exc),
            ) from exc
        with translated(settings, operation, volume):
            yield client
    finally:
        client.shutdown()


@contextlib.contextmanager
def pool_ioctx(client: Any, settings: ClusterSettings, operation: str, volume: str) -> Iterator:
    """An I/O context on the configured pool.

    :raises StorageError: the pool does not exist.
    """
    try:
        ioctx = client.open_ioctx(settings.pool)
    except rados.ObjectNotFound as exc:
        raise cd_exception.StorageError(
            operation=operation,
            volume=volume,
            reason="pool %s does not exist (see [rbd] pool)" % settings.pool,
        ) from exc
    with ioctx:
        yield ioctx


def mon_command(client: Any, settings: ClusterSettings, **cmd: Any) -> Any:
    """Run a monitor command and return its JSON answer.

    :raises PermissionDenied, BackendUnavailable, StorageError: by the errno.
    """
    ret, out, err = client.mon_command(
        json.dumps(dict(cmd, format="json")), b"", timeout=settings.op_timeout
    )
    if ret != 0:
        failure = OSError(-ret, "%s: %s" % (cmd["prefix"], err))
        raise storage_error(failure, settings, cmd["prefix"], settings.pool)
    return json.loads(out)


def pool_space(df: dict[str, Any], pool: str) -> tuple[int, int]:
    """(total, free) bytes of ``pool`` from a ``ceph df`` answer; (0, 0) if absent.

    Both are user bytes: ``max_avail`` already divides the raw space left by
    the pool's replication, so total is what is stored plus that.
    """
    for entry in df.get("pools", []):
        if entry["name"] == pool:
            free = int(entry["stats"]["max_avail"])
            return free + int(entry["stats"]["stored"]), free
    return 0, 0


def monitor_addresses(client: Any, settings: ClusterSettings) -> list[tuple[str, int]]:
    """(host, port) of each monitor, from the cluster's monitor map.

    The legacy (v1) address is preferred: QEMU passes ``host:port`` to
    librados, which reads a bare address as v1 unless the port is 3300.
    """
    addresses = []
    for mon in mon_command(client, settings, prefix="mon dump")["mons"]:
        addrvec = mon.get("public_addrs", {}).get("addrvec", [])
        by_type = {a["type"]: a["addr"] for a in addrvec}
        addr = by_type.get("v1") or by_type.get("v2") or mon["addr"].split("/")[0]
        host, _, port = addr.rpartition(":")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def parent_chain(client: Any, image: Any) -> list[str]:
    """``pool/image@snap`` of each ancestor of ``image``, nearest first."""
    chain: list[str] = []
    current = image
    opened = []
    try:
        while True:
            try:
                spec = current.get_parent_image_spec()
            except rbd.ImageNotFound:
                return chain
            chain.append("%s/%s@%s" % (spec["pool_name"], spec["image_name"], spec["snap_name"]))
            if len(chain) > 64:  # a loop would be a cluster bug; never spin on it
                return chain
            ioctx = client.open_ioctx(spec["pool_name"])
            opened.append(ioctx)
            current = rbd.Image(ioctx, spec["image_name"], read_only=True)
            opened.append(current)
    finally:
        for handle in reversed(opened):
            handle.close()


def other_watchers(client: Any, image: Any) -> list[str]:
    """Addresses of clients other than ``client`` watching ``image`` (e.g. a guest)."""
    me = client.get_instance_id()
    return [w["addr"] for w in image.watchers_list() if w["id"] != me]


@contextlib.contextmanager
def raw_file(path: str, disk_format: str, workdir: str) -> Iterator[str]:
    """A raw copy of the image file at ``path`` (itself if it is raw already).

    qcow2 is converted with ``qemu-img convert`` into a sparse temporary file
    in ``workdir``, removed on exit. The format is never probed: it is the
    image store's word, and an image with a backing or data file (which could
    name any file of this host) is refused.

    :raises InvalidImage: unknown format, or a backing/data file.
    :raises StorageError: qemu-img failed.
    """
    if disk_format not in ("raw", "qcow2"):
        raise cd_exception.InvalidImage(
            image=path, reason="format %r cannot go to RBD (raw and qcow2 can)" % disk_format
        )
    info = json.loads(qemu_img.run("info", "--output=json", "-f", disk_format, path))
    data_file = info.get("format-specific", {}).get("data", {}).get("data-file")
    if info.get("backing-filename") or data_file:
        raise cd_exception.InvalidImage(
            image=path, reason="it has a backing or data file; the image store holds whole images"
        )
    if disk_format == "raw":
        yield path
        return
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".convert-", suffix=".raw", dir=workdir)
    os.close(fd)
    try:
        qemu_img.run("convert", "-q", "-f", disk_format, "-O", "raw", path, tmp)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the data of a sparse file, widened to whole chunks."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        start -= start % CHUNK
        end = min(size, -(-end // CHUNK) * CHUNK)
        yield start, end
        offset = end


def write_file(image: Any, path: str) -> int:
    """Copy the raw file at ``path`` into ``image`` (as large), skipping zeros.

    A new RBD image reads as zeros, so holes and all-zero chunks are not
    written: the image stays thin, and a 10 GiB image holding 500 MiB costs
    500 MiB of writes.

    :returns: the bytes written.
    """
    written = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for start, end in _data_extents(fd, size):
            pos = start
            while pos < end:
                data = os.pread(fd, min(CHUNK, end - pos), pos)
                if not data:
                    break
                if data != (_ZERO_CHUNK if len(data) == CHUNK else bytes(len(data))):
                    image.write(data, pos)
                    written += len(data)
                pos += len(data)
    finally:
        os.close(fd)
    image.flush()
    return written
