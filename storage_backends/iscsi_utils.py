"""libiscsi, claim records and CHAP secrets for the ``iscsi`` backend.

The agent speaks iSCSI itself through libiscsi (``libiscsi.so.7``, loaded
with ctypes): login with the host's initiator IQN and CHAP, REPORT LUNS,
READ CAPACITY(16), READ/WRITE(16) of a few blocks, and SCSI-2
RESERVE(6)/RELEASE(6) of the claim LUN. Every call is bounded by
``iscsi_set_timeout``.

NOTE: ctypes rather than the ``iscsi-ls``/``iscsi-readcapacity16`` tools:
the CHAP password then stays in this process's memory (a tool would need
it in its environment), a claim is a few block reads and writes with no
tool for them, and there is no packaged Python binding (PyPI's
cython-iscsi builds against libiscsi-dev). Only ``scsi_task.status`` (the
first member) and ``scsi_sense.key`` are read from libiscsi's structures.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import re
import stat
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from compute_driver import exception as cd_exception
from storage_backends import exception

LOG = logging.getLogger(__name__)

#: iSCSI names (RFC 3720 3.2.6.3): no ',' or '/', which separate image-opts and LUNs.
IQN_RE = (
    r"^(iqn\.\d{4}-\d{2}\.[A-Za-z0-9.-]+(:[A-Za-z0-9.:_-]+)?"
    r"|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$"
)
#: ``host:port``: a name, an IPv4 address or a bracketed IPv6 address.
PORTAL_RE = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$"

_SESSION_NORMAL = 2
_STATUS_GOOD = 0
_STATUS_CHECK_CONDITION = 2
_STATUS_RESERVATION_CONFLICT = 0x18
_SENSE_UNIT_ATTENTION = 6
_SENSE_ILLEGAL_REQUEST = 5
#: UNIT ATTENTIONs (reset, LUN list changed, ...) a command may meet before it runs.
_ATTENTION_RETRIES = 5

#: Block 0 of a claim LUN: says it is one (never a guest's disk by mistake).
HEADER_MAGIC = b"compute-driver iscsi claims v1\n"
#: Start of a claim record; an all-zero block is a free LUN.
RECORD_MAGIC = b"CDCLAIM1"
_RECORD_HEAD = struct.Struct(">8sII")  # magic, JSON length, crc32 of the JSON


class ReservationConflict(Exception):
    """Another session holds the SCSI reservation of the LUN (internal)."""


class CorruptRecord(ValueError):
    """A claim record that is neither free nor valid (internal)."""


@dataclass(frozen=True)
class Settings:
    """How to reach the targets; the password is never printed (``repr=False``)."""

    backend: str
    portal: str
    initiator: str
    username: str | None
    password: str | None = field(repr=False)
    connect_timeout: int
    op_timeout: int


# --- libiscsi through ctypes ---------------------------------------------------------


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_lib: Any = None
_lib_lock = threading.Lock()


def _declare(lib: Any) -> None:
    vp, i, u32, u64, s = (
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_uint32,
        ctypes.c_uint64,
        ctypes.c_char_p,
    )
    flags = [i] * 5  # rd/wrprotect, dpo, fua, fua_nv, group_number
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "iscsi_create_context": (vp, [s]),
        "iscsi_destroy_context": (i, [vp]),
        "iscsi_get_error": (s, [vp]),
        "iscsi_set_targetname": (i, [vp, s]),
        "iscsi_set_session_type": (i, [vp, i]),
        "iscsi_set_initiator_username_pwd": (i, [vp, s, s]),
        "iscsi_set_timeout": (i, [vp, i]),
        "iscsi_full_connect_sync": (i, [vp, s, i]),
        "iscsi_logout_sync": (i, [vp]),
        "iscsi_reportluns_sync": (vp, [vp, i, i]),
        "iscsi_readcapacity16_sync": (vp, [vp, i]),
        "iscsi_read16_iov_sync": (vp, [vp, i, u64, u32, i, *flags, ctypes.POINTER(_Iovec), i]),
        "iscsi_write16_sync": (vp, [vp, i, u64, s, u32, i, *flags]),
        "iscsi_reserve6_sync": (vp, [vp, i]),
        "iscsi_release6_sync": (vp, [vp, i]),
        "scsi_datain_unmarshall": (vp, [vp]),
        "scsi_task_get_status": (i, [vp, vp]),
        "scsi_free_scsi_task": (None, [vp]),
    }
    for name, (restype, argtypes) in signatures.items():
        func = getattr(lib, name)
        func.restype, func.argtypes = restype, argtypes


def libiscsi() -> Any:
    """The loaded ``libiscsi.so.7``.

    :raises InvalidConfig: it is not installed.
    """
    global _lib
    with _lib_lock:
        if _lib is None:
            name = ctypes.util.find_library("iscsi") or "libiscsi.so.7"
            try:
                lib = ctypes.CDLL(name)
                _declare(lib)
            except (OSError, AttributeError) as exc:
                raise cd_exception.InvalidConfig(
                    reason="iscsi backend: libiscsi 1.19+ is not usable (%s); "
                    "apt-get install libiscsi7" % exc
                ) from exc
            _lib = lib
        return _lib


def _login_error(settings: Settings, target: str, why: str) -> cd_exception.ComputeDriverError:
    """Our error for a failed login; ``why`` is libiscsi's message (no secret in it)."""
    if "Authentication failure" in why:
        return exception.AuthenticationFailed(
            backend=settings.backend,
            user=settings.username or "(no CHAP user)",
            reason="target %s at %s refused CHAP login (%s); check [iscsi] chap_username "
            "and the password in the libvirt secret" % (target, settings.portal, why),
        )
    if "Target not found" in why or "Authorization failure" in why:
        return exception.PermissionDenied(
            backend=settings.backend,
            operation="login",
            volume=target,
            reason="no target %s at %s for initiator %s (%s): a wrong IQN in [iscsi] "
            "targets, or the target's ACL does not list [iscsi] initiator_iqn"
            % (target, settings.portal, settings.initiator, why),
        )
    return exception.BackendUnavailable(
        backend=settings.backend,
        reason="could not log in to %s at %s within %s s (%s)"
        % (target, settings.portal, settings.connect_timeout, why),
    )


class Session:
    """One logged-in iSCSI session to one target; use as a context manager.

    :raises AuthenticationFailed: CHAP was refused.
    :raises PermissionDenied: no such target for this initiator (IQN or ACL).
    :raises BackendUnavailable: the portal did not answer in time.
    """

    def __init__(self, settings: Settings, target: str) -> None:
        self.settings = settings
        self.target = target
        self._lib = libiscsi()
        self._ctx = self._lib.iscsi_create_context(settings.initiator.encode())
        if not self._ctx:
            raise cd_exception.StorageError(
                operation="login", volume=target, reason="libiscsi could not make a context"
            )
        try:
            lib, ctx = self._lib, self._ctx
            lib.iscsi_set_targetname(ctx, target.encode())
            lib.iscsi_set_session_type(ctx, _SESSION_NORMAL)
            if settings.username:
                lib.iscsi_set_initiator_username_pwd(
                    ctx, settings.username.encode(), (settings.password or "").encode()
                )
            lib.iscsi_set_timeout(ctx, settings.connect_timeout)
            # LUN 0 answers on every target (SAM); it is only used for the
            # TEST UNIT READY that ends the login.
            if lib.iscsi_full_connect_sync(ctx, settings.portal.encode(), 0) != 0:
                raise _login_error(settings, target, self._error())
            lib.iscsi_set_timeout(ctx, settings.op_timeout)
        except BaseException:
            self._lib.iscsi_destroy_context(self._ctx)
            self._ctx = None
            raise

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Log out (which also drops any reservation this session holds)."""
        if self._ctx:
            ctx, self._ctx = self._ctx, None
            self._lib.iscsi_logout_sync(ctx)
            self._lib.iscsi_destroy_context(ctx)

    def _error(self) -> str:
        raw = self._lib.iscsi_get_error(self._ctx) if self._ctx else None
        return raw.decode(errors="replace").strip() if raw else "unknown error"

    @contextlib.contextmanager
    def _command(self, operation: str, lun: int, issue: Any) -> Iterator[Any]:
        """Run ``issue()`` (returning a task) until no UNIT ATTENTION; yield the good task.

        :raises ReservationConflict: another session reserved the LUN.
        :raises BackendUnavailable: no answer within ``op_timeout``.
        :raises StorageError: the target refused the command.
        """
        sense = ctypes.create_string_buffer(64)
        for _attempt in range(_ATTENTION_RETRIES):
            task = issue()
            if not task:
                raise exception.BackendUnavailable(
                    backend=self.settings.backend,
                    reason="%s of %s/%d got no answer within %s s (%s)"
                    % (operation, self.target, lun, self.settings.op_timeout, self._error()),
                )
            try:
                status = self._lib.scsi_task_get_status(task, sense)
                # struct scsi_sense: unsigned char error_type; enum key (int).
                key = struct.unpack_from("=i", sense.raw, 4)[0]
                if status == _STATUS_CHECK_CONDITION and key == _SENSE_UNIT_ATTENTION:
                    continue
                if status == _STATUS_RESERVATION_CONFLICT:
                    raise ReservationConflict(self._error())
                if status != _STATUS_GOOD:
                    raise cd_exception.StorageError(
                        operation=operation,
                        volume="%s/%d" % (self.target, lun),
                        reason=self._error(),
                    )
                yield task
                return
            finally:
                self._lib.scsi_free_scsi_task(task)
        raise cd_exception.StorageError(
            operation=operation,
            volume="%s/%d" % (self.target, lun),
            reason="still UNIT ATTENTION after %d tries (%s)" % (_ATTENTION_RETRIES, self._error()),
        )

    def report_luns(self) -> list[int]:
        """The LUN numbers the target shows this initiator."""
        lib = self._lib
        with self._command(
            "report luns", 0, lambda: lib.iscsi_reportluns_sync(self._ctx, 0, 16384)
        ) as task:
            found = lib.scsi_datain_unmarshall(task)
            if not found:
                return []
            count = ctypes.c_uint32.from_address(found).value
            # struct scsi_reportluns_list { uint32_t num; uint16_t luns[]; }
            return [ctypes.c_uint16.from_address(found + 4 + 2 * n).value for n in range(count)]

    def read_capacity(self, lun: int) -> tuple[int, int] | None:
        """(bytes, block size) of a disk LUN; None for a LUN that is no disk (a controller)."""
        lib = self._lib
        try:
            with self._command(
                "read capacity", lun, lambda: lib.iscsi_readcapacity16_sync(self._ctx, lun)
            ) as task:
                found = lib.scsi_datain_unmarshall(task)
                if not found:
                    return None
                # struct scsi_readcapacity16 { uint64_t returned_lba; uint32_t block_length; ...}
                last_lba = ctypes.c_uint64.from_address(found).value
                block = ctypes.c_uint32.from_address(found + 8).value
        except cd_exception.StorageError:
            return None
        if not block:
            return None
        return (last_lba + 1) * block, block

    def read(self, lun: int, lba: int, length: int, block: int) -> bytes:
        """``length`` bytes (whole blocks) from block ``lba``."""
        buf = ctypes.create_string_buffer(length)
        iov = _Iovec(ctypes.cast(buf, ctypes.c_void_p), length)
        lib = self._lib
        with self._command(
            "read",
            lun,
            lambda: lib.iscsi_read16_iov_sync(
                self._ctx, lun, lba, length, block, 0, 0, 0, 0, 0, ctypes.byref(iov), 1
            ),
        ):
            return buf.raw

    def write(self, lun: int, lba: int, data: bytes, block: int) -> None:
        """Write ``data`` (whole blocks) at block ``lba``, forced to the medium (FUA)."""
        lib = self._lib
        with self._command(
            "write",
            lun,
            lambda: lib.iscsi_write16_sync(
                self._ctx, lun, lba, data, len(data), block, 0, 0, 1, 0, 0
            ),
        ):
            pass

    def reserve(self, lun: int) -> bool:
        """Take the SCSI-2 reservation of ``lun``; False if another session holds it."""
        lib = self._lib
        try:
            with self._command("reserve", lun, lambda: lib.iscsi_reserve6_sync(self._ctx, lun)):
                return True
        except ReservationConflict:
            return False

    def release(self, lun: int) -> None:
        lib = self._lib
        with self._command("release", lun, lambda: lib.iscsi_release6_sync(self._ctx, lun)):
            pass


@contextlib.contextmanager
def reserved(sessions: list[tuple[Session, int]], timeout: float) -> Iterator[None]:
    """Hold the reservation of each (session, claim LUN), taken in the given order.

    NOTE: the reservation is the lock that makes a claim atomic across hosts
    (tgt has no COMPARE AND WRITE). It belongs to the session: if this
    process dies, the target drops the session and its reservation.

    :raises BackendUnavailable: another host held one for ``timeout`` seconds.
    """
    held: list[tuple[Session, int]] = []
    try:
        for session, lun in sessions:
            deadline = time.monotonic() + timeout
            delay = 0.005
            while not session.reserve(lun):
                if time.monotonic() > deadline:
                    raise exception.BackendUnavailable(
                        backend=session.settings.backend,
                        reason="the claim LUN %s/%d stayed reserved by another session for "
                        "%s s (a host claiming a LUN, or one that died while doing so: "
                        "see 'tgtadm --op show --mode conn')" % (session.target, lun, timeout),
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
            held.append((session, lun))
        yield
    finally:
        for session, lun in reversed(held):
            try:
                session.release(lun)
            except cd_exception.ComputeDriverError:
                # Logging out drops it too.
                LOG.warning("Could not release claim LUN %s/%d", session.target, lun)


def patiently(session: Session, lun: int, timeout: float, call: Any) -> Any:
    """``call()``, retried while another session holds the reservation of ``lun``.

    :raises BackendUnavailable: it was held for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return call()
        except ReservationConflict:
            if time.monotonic() > deadline:
                raise exception.BackendUnavailable(
                    backend=session.settings.backend,
                    reason="LUN %s/%d stayed reserved by another session for %s s"
                    % (session.target, lun, timeout),
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


# --- claim records -------------------------------------------------------------------


def header_block(block: int) -> bytes:
    return HEADER_MAGIC.ljust(block, b"\0")


def is_header(data: bytes) -> bool:
    return data.startswith(HEADER_MAGIC) and not data[len(HEADER_MAGIC) :].strip(b"\0")


def encode_record(record: dict[str, Any], block: int) -> bytes:
    """One block holding ``record``: magic, length, crc32, JSON, zeros."""
    payload = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    data = _RECORD_HEAD.pack(RECORD_MAGIC, len(payload), zlib.crc32(payload)) + payload
    if len(data) > block:
        raise ValueError(
            "claim record of %d bytes does not fit a %d-byte block" % (len(data), block)
        )
    return data.ljust(block, b"\0")


def decode_record(data: bytes) -> dict[str, Any] | None:
    """The record in a block; None for a free (all-zero) block.

    :raises CorruptRecord: anything else (a torn write would be caught here).
    """
    if not data.strip(b"\0"):
        return None
    if len(data) < _RECORD_HEAD.size:
        raise CorruptRecord("short block")
    magic, length, crc = _RECORD_HEAD.unpack_from(data)
    payload = data[_RECORD_HEAD.size : _RECORD_HEAD.size + length]
    if magic != RECORD_MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
        raise CorruptRecord("bad magic, length or checksum")
    try:
        record = json.loads(payload)
    except ValueError as exc:
        raise CorruptRecord(str(exc)) from exc
    if not isinstance(record, dict) or not isinstance(record.get("volume"), str):
        raise CorruptRecord("no volume in the record")
    return record


# --- qemu-img's view of a LUN --------------------------------------------------------


def image_opts(settings: Settings, target: str, lun: int, secret_id: str | None) -> str:
    """``--image-opts`` of a LUN for qemu-img (the password only as a secret object id)."""
    opts = [
        "driver=iscsi",
        "transport=tcp",
        "portal=" + settings.portal,
        "target=" + target,
        "lun=%d" % lun,
        "initiator-name=" + settings.initiator,
        "timeout=%d" % settings.op_timeout,
    ]
    if settings.username:
        opts += ["user=" + settings.username, "password-secret=%s" % secret_id]
    return ",".join(opts)


@contextlib.contextmanager
def secret_file(password: str) -> Iterator[str]:
    """A 0600 temporary file holding ``password``, for ``--object secret,file=``; removed after."""
    fd, path = tempfile.mkstemp(prefix="cd-iscsi-", suffix=".secret")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --- the CHAP password -----------------------------------------------------------------


def read_password_file(path: str) -> str:
    """The password in ``path``, which only its owner may read.

    :raises InvalidConfig: missing, unreadable, readable by group/others, or empty.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise cd_exception.InvalidConfig(
            reason="[iscsi] chap_password_file %s: %s" % (path, exc.strerror)
        ) from exc
    with os.fdopen(fd) as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise cd_exception.InvalidConfig(
                reason="[iscsi] chap_password_file %s is mode %04o: make it 0600"
                % (path, stat.S_IMODE(mode))
            )
        password = f.read().rstrip("\r\n")
    if not password:
        raise cd_exception.InvalidConfig(reason="[iscsi] chap_password_file %s is empty" % path)
    return password


SECRET_XML = (
    "<secret ephemeral='no' private='yes'><uuid>{uuid}</uuid>"
    "<description>CHAP password of the compute-driver iscsi backend</description>"
    "<usage type='iscsi'><target>compute-driver-iscsi-{uuid}</target></usage></secret>"
)


def libvirt_chap_password(conn: Any, secret_uuid: str, password: str | None) -> str:
    """The CHAP password, kept in the libvirt secret ``secret_uuid`` on ``conn``.

    ``conn`` is the agent's libvirt connection, lent (never closed here).

    With ``password`` (read from the password file), the secret is defined if
    missing and given that value. Without, it is read from the secret, which
    then must not be private.

    :raises InvalidConfig: no such secret, a private one without a file, or
        a secret of another usage type.
    """
    import libvirt  # NOTE: here, so reading the configuration needs no libvirt binding

    try:
        secret = conn.secretLookupByUUIDString(secret_uuid)
    except libvirt.libvirtError as exc:
        if password is None:
            raise cd_exception.InvalidConfig(
                reason="[iscsi] chap_secret_uuid %s: no such libvirt secret (%s); define "
                "it (usage type iscsi) or set chap_password_file"
                % (secret_uuid, exc.get_error_message())
            ) from exc
        secret = conn.secretDefineXML(SECRET_XML.format(uuid=secret_uuid))
        LOG.info("Defined libvirt secret %s for the iscsi CHAP password", secret_uuid)
    if secret.usageType() != libvirt.VIR_SECRET_USAGE_TYPE_ISCSI:
        raise cd_exception.InvalidConfig(
            reason="[iscsi] chap_secret_uuid %s is a libvirt secret of another usage "
            "type; QEMU needs usage type 'iscsi'" % secret_uuid
        )
    if password is not None:
        secret.setValue(password.encode())
        return password
    try:
        return bytes(secret.value()).decode()
    except libvirt.libvirtError as exc:
        raise cd_exception.InvalidConfig(
            reason="[iscsi] libvirt secret %s cannot be read back (private='yes'?): set "
            "[iscsi] chap_password_file so the agent has the password too" % secret_uuid
        ) from exc


def portal_host_port(portal: str) -> tuple[str, int]:
    match = re.match(PORTAL_RE, portal)
    if not match:
        raise cd_exception.InvalidConfig(reason="[iscsi] portal %r is not host:port" % portal)
    return match.group(1).strip("[]"), int(match.group(2))
