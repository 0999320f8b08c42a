"""The one error hierarchy of compute-driver.

Every error a caller can see (over RPC, from the Python client, from
``computectl``) is a :class:`ComputeDriverError` subclass with a stable
``code``. Codes never change once released; messages may be reworded.

Errors cross the message bus intact: oslo.messaging serializes the class
path, ``args`` and ``kwargs``, and rebuilds the same class on the client when
this module is in the transport's ``allowed_remote_exmods``. That is why each
error keeps the keyword arguments it was built from in ``self.kwargs``.

A client that cannot rebuild our classes (any client of plain
oslo.messaging, which gets ``oslo_messaging.RemoteError``) reads the error
from the failure's ``message``, which an RPC server sets to
:meth:`ComputeDriverError.wire_text` (rpc/endpoint.py): a JSON object with
``code``, ``kind``, ``message`` and ``request_id``.
"""

from __future__ import annotations

import json
from typing import Any


class ComputeDriverError(Exception):
    """Base of every error compute-driver raises on purpose.

    Subclasses set ``msg_fmt`` (filled from keyword arguments) and ``code``
    (stable, machine-readable). ``kind`` groups codes for exit statuses:
    ``invalid``, ``not_found``, ``conflict`` or ``failed``.
    """

    msg_fmt = "An unknown error occurred."
    code = "error"
    kind = "failed"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError, ValueError):
                # NOTE: a wrong keyword must never hide the real error.
                message = "%s (%s)" % (self.msg_fmt, kwargs)
        self.message = message
        super().__init__(message)

    #: What ``str()`` gives instead of the message: set only on the copy an
    #: RPC server replies with (rpc/endpoint.py ``reply_copy``).
    # NOTE: oslo.messaging sends ``str(error)`` as the failure's message and
    # ``error.args`` apart: an outside client reads the code from the one,
    # our clients rebuild the class (its message unchanged) from the other.
    _wire: str | None = None

    def __str__(self) -> str:
        return self._wire if self._wire is not None else self.message

    def to_dict(self) -> dict[str, str]:
        """The error as the stable shape clients and ``-f json`` print."""
        return {"code": self.code, "kind": self.kind, "message": self.message}

    def wire_text(self, request_id: str) -> str:
        """The error as a client of plain oslo.messaging reads it: ``RemoteError.value``.

        One line of JSON: :meth:`to_dict` and the ``request_id`` the server
        logged it under.
        """
        return json.dumps(dict(self.to_dict(), request_id=request_id), sort_keys=True)


# --- invalid input --------------------------------------------------------


class Invalid(ComputeDriverError):
    msg_fmt = "Invalid input: %(reason)s"
    code = "invalid"
    kind = "invalid"


class InvalidPayload(Invalid):
    msg_fmt = "Invalid payload for %(method)s: %(reason)s"
    code = "invalid_payload"


class InvalidContext(Invalid):
    msg_fmt = "Invalid request context: %(reason)s"
    code = "invalid_context"


class Forbidden(Invalid):
    msg_fmt = "%(action)s is not allowed: %(reason)s"
    code = "forbidden"


class InvalidConfig(Invalid):
    msg_fmt = "%(reason)s"
    code = "invalid_config"


class UnknownMethod(Invalid):
    msg_fmt = "The %(api)s API has no RPC method %(method)s"
    code = "unknown_method"


class UnsupportedVersion(Invalid):
    msg_fmt = "RPC version %(version)s of %(api)s is not supported: %(reason)s"
    code = "unsupported_version"


class InvalidVersion(Invalid):
    """Not a version number at all (``unsupported_version`` is one no endpoint serves)."""

    msg_fmt = "RPC version %(version)r of %(api)s is not a version number (MAJOR.MINOR)"
    code = "invalid_version"


class InvalidImage(Invalid):
    msg_fmt = "Invalid image %(image)s: %(reason)s"
    code = "invalid_image"


class InvalidNetwork(Invalid):
    msg_fmt = "Invalid network %(network)s: %(reason)s"
    code = "invalid_network"


class InvalidFlavor(Invalid):
    msg_fmt = "Invalid flavor %(flavor)s: %(reason)s"
    code = "invalid_flavor"


class GuestConfigError(Invalid):
    """A flavor extra spec or image property that is unknown, malformed or impossible here."""

    msg_fmt = "Invalid guest configuration %(property)s=%(value)r: %(reason)s"
    code = "invalid_guest_config"


# --- not found ------------------------------------------------------------


class NotFound(ComputeDriverError):
    msg_fmt = "%(what)s %(name)s not found"
    code = "not_found"
    kind = "not_found"


class InstanceNotFound(NotFound):
    msg_fmt = "Server %(instance)s not found"
    code = "instance_not_found"


class ImageNotFound(NotFound):
    msg_fmt = "Image %(image)s not found"
    code = "image_not_found"


class FlavorNotFound(NotFound):
    msg_fmt = "Flavor %(flavor)s not found"
    code = "flavor_not_found"


class HostNotFound(NotFound):
    msg_fmt = "Host %(host)s not found"
    code = "host_not_found"


class VolumeNotFound(NotFound):
    msg_fmt = "Volume %(volume)s not found"
    code = "volume_not_found"


class NetworkNotFound(NotFound):
    msg_fmt = "Network %(network)s not found"
    code = "network_not_found"


class PluginNotFound(NotFound):
    msg_fmt = "No %(family)s plugin named %(name)r; available: %(available)s"
    code = "plugin_not_found"


# --- conflicts ------------------------------------------------------------


class Conflict(ComputeDriverError):
    msg_fmt = "Conflict: %(reason)s"
    code = "conflict"
    kind = "conflict"


class DuplicateName(Conflict):
    msg_fmt = "%(what)s named %(name)s already exists"
    code = "duplicate_name"


class InUse(Conflict):
    msg_fmt = "%(what)s %(name)s is in use: %(reason)s"
    code = "in_use"


class InstanceStateConflict(Conflict):
    msg_fmt = "Server %(instance)s is %(state)s: %(reason)s"
    code = "instance_state_conflict"


class SegmentInUse(Conflict):
    msg_fmt = "Segment %(segment)s of type %(type)s is taken by another network"
    code = "segment_in_use"


class NetworkFull(Conflict):
    msg_fmt = "Network %(network)s has no address left: %(reason)s"
    code = "network_full"


class InvalidVolumeSize(Invalid):
    msg_fmt = "Volume %(volume)s cannot become %(size_gb)s GiB: %(reason)s"
    code = "invalid_volume_size"


class VolumeNotAttached(Conflict):
    msg_fmt = "Volume %(volume)s is not attached to server %(instance)s"
    code = "volume_not_attached"


class ProjectMismatch(Conflict):
    msg_fmt = "%(what)s %(name)s belongs to another project than server %(instance)s"
    code = "project_mismatch"


class VolumeStateConflict(Conflict):
    msg_fmt = "Volume %(volume)s is %(status)s: %(reason)s"
    code = "volume_state_conflict"


# --- failures -------------------------------------------------------------


class NoValidHost(ComputeDriverError):
    msg_fmt = "No valid host for %(instance)s: %(reason)s"
    code = "no_valid_host"


class BuildFailed(ComputeDriverError):
    msg_fmt = "Build of server %(instance)s failed: %(reason)s"
    code = "build_failed"


class ActionFailed(ComputeDriverError):
    msg_fmt = "%(action)s of server %(instance)s failed: %(reason)s"
    code = "action_failed"


class DeleteFailed(ComputeDriverError):
    msg_fmt = "Delete of server %(instance)s failed: %(reason)s"
    code = "delete_failed"


class HypervisorUnavailable(ComputeDriverError):
    msg_fmt = "Hypervisor at %(uri)s is unavailable: %(reason)s"
    code = "hypervisor_unavailable"


class VirtError(ComputeDriverError):
    msg_fmt = "Hypervisor operation %(operation)s on %(instance)s failed: %(reason)s"
    code = "virt_error"


class DeviceDetachFailed(ComputeDriverError):
    msg_fmt = "The %(device)s is still attached to server %(instance)s: %(reason)s"
    code = "device_detach_failed"


class StorageError(ComputeDriverError):
    msg_fmt = "Storage operation %(operation)s on %(volume)s failed: %(reason)s"
    code = "storage_error"


class NetworkError(ComputeDriverError):
    msg_fmt = "Network operation %(operation)s on port %(port)s failed: %(reason)s"
    code = "network_error"


class DatabaseUnavailable(ComputeDriverError):
    msg_fmt = "The scheduler database is unavailable: %(reason)s"
    code = "database_unavailable"


class InternalError(ComputeDriverError):
    msg_fmt = "Internal error in %(method)s (see the service log for request %(request_id)s)"
    code = "internal_error"


class MessagingError(ComputeDriverError):
    msg_fmt = "Message bus error talking to %(service)s: %(reason)s"
    code = "messaging_error"


class ReportRefused(Invalid):
    msg_fmt = "Report %(method)s for host %(host)s refused: %(reason)s"
    code = "report_refused"


class RequestRefused(Invalid):
    msg_fmt = "Request %(method)s to host %(host)s refused: %(reason)s"
    code = "request_refused"


class MessagingTimeout(ComputeDriverError):
    msg_fmt = "No answer from %(service)s within %(timeout)s s (is it running?)"
    code = "messaging_timeout"


def all_error_classes() -> list[type[ComputeDriverError]]:
    """Every error class in this module, for docs and uniqueness tests."""
    found: list[type[ComputeDriverError]] = []
    pending: list[type[ComputeDriverError]] = [ComputeDriverError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


# --- instance snapshots ---------------------------------------------------


class InvalidSnapshot(Invalid):
    msg_fmt = "Invalid snapshot %(name)r of server %(instance)s: %(reason)s"
    code = "invalid_instance_snapshot"


class SnapshotNotFound(NotFound):
    msg_fmt = "Server %(instance)s has no snapshot named %(name)s"
    code = "instance_snapshot_not_found"


class SnapshotExists(Conflict):
    msg_fmt = "Server %(instance)s already has a snapshot named %(name)s"
    code = "instance_snapshot_exists"


class SnapshotLimitReached(Conflict):
    msg_fmt = "Server %(instance)s already has %(count)s snapshots, the most allowed (%(limit)s)"
    code = "instance_snapshot_limit_reached"


class PortLimitReached(Conflict):
    msg_fmt = "Server %(instance)s already has %(count)s ports, the most allowed (%(limit)s)"
    code = "instance_port_limit_reached"


class VolumeLimitReached(Conflict):
    msg_fmt = "Server %(instance)s already has %(count)s volumes, the most allowed (%(limit)s)"
    code = "instance_volume_limit_reached"


class SnapshotConflict(Conflict):
    msg_fmt = "Cannot %(action)s snapshot %(name)s of server %(instance)s: %(reason)s"
    code = "instance_snapshot_conflict"
