"""Errors of the storage backends."""

from compute_driver import exception


class BackendVolumeNotFound(exception.NotFound):
    """The backend has no such volume (the scheduler's record may still name it)."""

    msg_fmt = "Volume %(volume)s not found on backend %(backend)s"
    code = "backend_volume_not_found"


class InvalidVolumeName(exception.Invalid):
    msg_fmt = "Invalid volume name %(volume)r: %(reason)s"
    code = "invalid_volume_name"


class BackendUnavailable(exception.StorageError):
    msg_fmt = "Storage backend %(backend)s is unavailable: %(reason)s"
    code = "storage_backend_unavailable"


class NoSpace(exception.StorageError):
    msg_fmt = "Backend %(backend)s has no room for %(volume)s: needs %(needed)s, %(free)s free"
    code = "storage_no_space"


class PermissionDenied(exception.StorageError):
    msg_fmt = "Storage backend %(backend)s refused %(operation)s on %(volume)s: %(reason)s"
    code = "storage_permission_denied"


class VolumeHasClones(exception.Conflict):
    msg_fmt = (
        "Volume %(volume)s on backend %(backend)s has linked clones (%(clones)s): "
        "delete or flatten them first"
    )
    code = "volume_has_clones"


class VolumeBusy(exception.Conflict):
    msg_fmt = "Volume %(volume)s on backend %(backend)s is busy: %(reason)s"
    code = "volume_busy"


# NOTE: defined in the core exceptions because the scheduler checks sizes too
# and must not import a plugin package; the backends raise it from here.
InvalidVolumeSize = exception.InvalidVolumeSize


class VolumeSnapshotNotFound(exception.NotFound):
    msg_fmt = "Snapshot %(snapshot)s of volume %(volume)s not found on backend %(backend)s"
    code = "volume_snapshot_not_found"


class Unsupported(exception.Invalid):
    msg_fmt = "Storage backend %(backend)s does not offer %(ability)s (see its describe())"
    code = "storage_unsupported"


class AuthenticationFailed(PermissionDenied):
    msg_fmt = "Storage backend %(backend)s refused the credentials of %(user)s: %(reason)s"
    code = "storage_authentication_failed"
