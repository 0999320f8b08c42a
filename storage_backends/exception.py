"""Errors of the storage backends."""

from compute_driver import exception


class VolumeNotFound(exception.NotFound):
    msg_fmt = "Volume %(volume)s not found on backend %(backend)s"
    code = "volume_not_found"


class InvalidVolumeName(exception.Invalid):
    msg_fmt = "Invalid volume name %(volume)r: %(reason)s"
    code = "invalid_volume_name"


class BackendUnavailable(exception.StorageError):
    msg_fmt = "Storage backend %(backend)s is unavailable: %(reason)s"
    code = "storage_backend_unavailable"


class NoSpace(exception.StorageError):
    msg_fmt = "Backend %(backend)s has no room for %(volume)s: needs %(needed)s, %(free)s free"
    code = "storage_no_space"
