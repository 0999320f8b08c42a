"""The ``nfs`` backend: volumes are files on an NFS export, shared by every host.

The layout inside the export is the same in both access modes:
``volumes/<id>.qcow2`` (or ``.raw``) and ``images/<image uuid>.qcow2`` (the
cached copies linked clones back onto). The file logic is the dir
backend's :class:`~storage_backends.filestore.FileStore`; only where the files
are differs (``[nfs] access_mode``):

``mount``
    The operator mounts the export on every host at ``mount_point`` (the
    same path everywhere: overlays name their backing file by path). Disks
    are ``type='file'``. Each call first checks, within ``timeout``, that
    the mount point is mounted and answers.

``direct``
    Nothing is mounted: QEMU's own NFS client opens the volume
    (``<disk type='network'><source protocol='nfs'>`` with an ``<identity>``),
    qemu-img works on ``nfs://`` URLs and the agent's file operations go
    through libnfs (:mod:`storage_backends.nfs_utils`), every request
    bounded by ``timeout``.

A dead server never hangs the agent: every call fails within ``timeout``
(``copy_timeout`` for image copies) with
:class:`~storage_backends.exception.BackendUnavailable` naming the server.

NOTE: in direct mode QEMU's image locks do not exist (libnfs has none), so
the backend cannot see that a guest has a volume open: the caller must stop
the guest before reverting, resizing or deleting (the virt driver snapshots
running guests through libvirt).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from oslo_config import cfg

from compute_driver import domain_xml as lvxml
from compute_driver import exception as cd_exception
from storage_backends import base, exception, nfs_utils
from storage_backends.files import VOLUME_FORMATS, Files, LocalFiles, volume_opts
from storage_backends.filestore import FileStore, FileStoreBackend

LOG = logging.getLogger(__name__)

GROUP = cfg.OptGroup(
    "nfs",
    title="nfs storage backend",
    help="Volumes as files on an NFS export, shared by every host.",
)

OPTS = [
    cfg.StrOpt(
        "access_mode",
        default="direct",
        choices=(
            ("direct", "QEMU and the agent talk NFS themselves (libnfs); nothing is mounted"),
            ("mount", "the operator mounts the export at mount_point on every host"),
        ),
        help="How hosts reach the export. Related options: server, export (direct); "
        "mount_point (mount).",
    ),
    cfg.HostAddressOpt(
        "server",
        help="NFS server (host name or IPv4 address) in direct mode; in mount mode only "
        "named in errors. It must run a portmapper (QEMU's NFS client is NFSv3) and allow "
        "AUTH_SYS root from the hosts (no_root_squash). Related options: export.",
    ),
    cfg.StrOpt(
        "export",
        default="/export",
        regex=r"^/[^\0]*$",
        help="Path of the export on the server (direct mode), e.g. /export. "
        "Related options: server.",
    ),
    cfg.StrOpt(
        "mount_point",
        default="/var/lib/compute-driver/nfs",
        help="Where the export is mounted on every host (mount mode), the same path on "
        "all of them. Mount it 'soft' with a 'timeo': a hard mount of a dead server makes "
        "file operations hang for good. Related options: access_mode, timeout.",
    ),
    cfg.IntOpt(
        "timeout",
        default=30,
        min=1,
        max=600,
        help="Seconds one NFS request or one qemu-img metadata run (create, info, resize, "
        "snapshot) may take before the call fails with storage_backend_unavailable. "
        "Related options: copy_timeout.",
    ),
    cfg.IntOpt(
        "copy_timeout",
        default=3600,
        min=1,
        max=86400,
        help="Seconds one image copy (caching an image, a full copy, an export) may take. "
        "Related options: timeout.",
    ),
    cfg.StrOpt(
        "qemu_user",
        default="root",
        help="User QEMU claims on the server in direct mode (the disk's <identity>): "
        "qemu-img makes files owned by root with mode 0600. Related options: qemu_group.",
    ),
    cfg.StrOpt(
        "qemu_group",
        default="root",
        help="Group QEMU claims on the server in direct mode. Related options: qemu_user.",
    ),
    *volume_opts("nfs"),
]


def list_opts() -> dict:
    return {GROUP: OPTS}


def mount_source(mount_point: str) -> str | None:
    """What is mounted at ``mount_point`` (``server:/export``), from mountinfo."""
    target = os.path.realpath(mount_point)
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.readlines()
    except OSError:
        return None
    source = None
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[4] == target and " - " in line:
            source = line.split(" - ", 1)[1].split()[1]
    return source


class MountedFiles(LocalFiles):
    """The layout on an export the operator mounted; each call checks the mount.

    NOTE: the check runs in a thread of its own, so a dead hard mount blocks
    that thread, not the caller; while it stays blocked every call fails at
    once rather than starting another.
    """

    #: QEMU reads backing files on the export as its own user (root squash).
    file_mode = 0o644

    def __init__(
        self, mount_point: str, timeout: int, copy_timeout: int, server: str | None
    ) -> None:
        super().__init__(
            os.path.join(mount_point, nfs_utils.AREAS["volumes"]),
            os.path.join(mount_point, nfs_utils.AREAS["images"]),
        )
        self.mount_point = mount_point
        self.check_timeout = timeout
        self.copy_timeout = copy_timeout
        self.server = server
        self._stuck: threading.Thread | None = None

    def _unavailable(self, reason: str) -> exception.BackendUnavailable:
        source = mount_source(self.mount_point) or self.server or "(unknown server)"
        return exception.BackendUnavailable(
            backend="nfs", reason="NFS mount %s of %s: %s" % (self.mount_point, source, reason)
        )

    def check(self, operation: str) -> None:
        if self._stuck is not None and self._stuck.is_alive():
            raise self._unavailable("a check is still waiting for the server")
        result: dict[str, Any] = {}

        def probe() -> None:
            try:
                result["mounted"] = os.path.ismount(self.mount_point)
                if result["mounted"]:
                    os.statvfs(self.mount_point)
                    super(MountedFiles, self).check(operation)
            except OSError as exc:
                result["error"] = exc

        thread = threading.Thread(target=probe, name="nfs-mount-check", daemon=True)
        thread.start()
        thread.join(self.check_timeout)
        if thread.is_alive():
            self._stuck = thread
            raise self._unavailable("no answer within %d s (%s)" % (self.check_timeout, operation))
        if "error" in result:
            raise self._unavailable("%s failed: %s" % (operation, result["error"]))
        if not result.get("mounted"):
            raise self._unavailable(
                "nothing is mounted there; mount the export (see [nfs] mount_point)"
            )

    def timeout(self, copy: bool) -> float:
        return self.copy_timeout if copy else self.check_timeout


class NfsStorageBackend(FileStoreBackend):
    """Volumes as qcow2 or raw files on an NFS export; root disks as overlays."""

    name = "nfs"

    def __init__(self, conf: cfg.ConfigOpts, services: base.Services | None = None) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.opts = conf.nfs
        self.access_mode = self.opts.access_mode
        self.files: Files
        if self.access_mode == "direct":
            if not self.opts.server:
                raise cd_exception.InvalidConfig(
                    reason="[nfs] server is not set: direct mode needs the NFS server's address"
                )
            nfs_utils.library()  # fail at start, with the package to install
            self.where = nfs_utils.Export(
                backend=self.name,
                server=self.opts.server,
                export=self.opts.export.rstrip("/") or "/",
                directory="",
                timeout=self.opts.timeout,
            )
            self.files = nfs_utils.NfsFiles(self.where, self.opts.copy_timeout)
        else:
            self.files = MountedFiles(
                self.opts.mount_point, self.opts.timeout, self.opts.copy_timeout, self.opts.server
            )
        self.store = FileStore(self.name, self.files, self.opts)

    def describe(self) -> base.Description:
        return base.Description(
            name=self.name,
            shared=True,
            formats=tuple(VOLUME_FORMATS),
            linked_clone=True,
            snapshots=True,
            resize=True,
            image_cache=True,
            export=True,
            details={"access_mode": self.access_mode},
        )

    def disk_config(self, volume: base.Volume) -> lvxml.Disk:
        """A file disk (mount mode) or a network disk QEMU opens over NFS (direct)."""
        if self.access_mode == "mount":
            return self.file_disk(volume)
        name = "%s.%s" % (base.check_volume_name(volume.id), volume.format)
        export = self.where.export.rstrip("/")
        return lvxml.Disk(
            type="network",
            device="disk",
            driver_name="qemu",
            driver_type=volume.format,
            cache="none",
            discard="unmap",
            source_protocol="nfs",
            source_name="%s/%s/%s" % (export, nfs_utils.AREAS["volumes"], name),
            hosts=[lvxml.DiskHost(name=self.where.server)],
            source_identity_user=self.opts.qemu_user,
            source_identity_group=self.opts.qemu_group,
        )
