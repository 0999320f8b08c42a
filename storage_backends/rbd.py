"""The ``rbd`` backend: volumes are RBD images in a Ceph pool.

Every host sees the same pool, so volumes are shared (live migration needs
no block copy). An image from the image store is imported into the pool
once, as ``image-<uuid>`` with a protected snapshot ``base``; a root disk is
a copy-on-write clone of that snapshot, made in milliseconds whatever the
image's size. QEMU reaches the volume itself through librbd (a network
disk); the cephx key lives in the keyring file and in a libvirt secret,
never in a log, a process argument or an RPC payload.

All cluster work goes through the librados/librbd Python bindings (see
:mod:`storage_backends.rbd_utils`), each call bounded by ``connect_timeout``
and ``op_timeout``; the one subprocess is ``qemu-img convert`` of a qcow2
image to raw before its import.

Deleting a volume that has linked clones (made from one of its snapshots,
by Ceph tools) is refused with :class:`~storage_backends.exception.VolumeHasClones`
rather than flattening them: a flatten copies whole volumes, which is too
slow and too large for a delete call to do behind the caller's back.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import threading
import uuid
from typing import Any

from oslo_config import cfg

from compute_driver import domain_xml as lvxml
from compute_driver import exception as cd_exception
from compute_driver.objects import ImageSpec
from storage_backends import base, exception, rbd_utils

LOG = logging.getLogger(__name__)

GiB = 1024**3
#: Name prefix of imported images; volume names may not use it.
IMAGE_PREFIX = "image-"
#: The protected snapshot of an imported image that root disks are cloned from.
BASE_SNAP = "base"
#: Suffix of a volume while it is being made: a crash leaves no half-made volume.
CREATING = ".creating"
_UUID_RE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

GROUP = cfg.OptGroup(
    "rbd",
    title="rbd storage backend",
    help="Volumes as RBD images in a Ceph pool, shared by every host.",
)

OPTS = [
    cfg.StrOpt(
        "pool",
        default="rbd",
        help="Ceph pool of the volumes and of the imported images they are cloned from. "
        "Related options: user (its caps must allow this pool).",
    ),
    cfg.StrOpt(
        "ceph_conf",
        default="/etc/ceph/ceph.conf",
        help="Path of the ceph.conf that names the monitors (mon host). Related options: keyring.",
    ),
    cfg.StrOpt(
        "user",
        default="compute",
        help="Cephx id the agent and QEMU use, without the 'client.' prefix. It needs "
        "'mon profile rbd' and 'osd profile rbd pool=<pool>'. The same on every host, "
        "or live migration fails. Related options: keyring, secret_uuid.",
    ),
    cfg.StrOpt(
        "keyring",
        help="Path of the keyring holding the key of client.<user> (mode 0600). Unset: "
        "librados' default search (/etc/ceph/ceph.client.<user>.keyring, ...). The key is "
        "read from this file only; it is never logged or passed on. Related options: user.",
    ),
    cfg.StrOpt(
        "secret_uuid",
        regex=_UUID_RE,
        help="UUID of the libvirt secret (usage type 'ceph') holding client.<user>'s key, "
        "defined with the same UUID on every host; guests' disks refer to it. Required. "
        "Related options: user.",
    ),
    cfg.IntOpt(
        "connect_timeout",
        default=10,
        min=1,
        max=300,
        help="Seconds to wait for a monitor when connecting (librados "
        "client_mount_timeout); a dead cluster makes each call fail after this long with "
        "storage_backend_unavailable. Related options: op_timeout.",
    ),
    cfg.IntOpt(
        "op_timeout",
        default=30,
        min=1,
        max=3600,
        help="Seconds one monitor or OSD request may take (librados rados_mon_op_timeout "
        "and rados_osd_op_timeout) before the operation fails with "
        "storage_backend_unavailable. A long operation (an import, a flatten) is many "
        "requests. Related options: connect_timeout.",
    ),
    cfg.IntOpt(
        "max_clone_depth",
        default=5,
        min=0,
        max=64,
        help="Most ancestors a new volume may have: a clone whose chain of parents is "
        "longer is flattened (copied whole) at once. A root disk cloned from an image has "
        "one. 0 makes every volume a full copy.",
    ),
    cfg.StrOpt(
        "image_conversion_dir",
        default="$state_path/rbd-conversion",
        help="Directory for the raw copy of a qcow2 image while it is imported into the "
        "pool (removed after); it needs room for the image's data, not its virtual size.",
    ),
]


def list_opts() -> dict:
    return {GROUP: OPTS}


class RbdStorageBackend(base.StorageBackend):
    """Volumes as RBD images; root disks as COW clones of imported images."""

    name = "rbd"

    def __init__(self, conf: cfg.ConfigOpts, services: base.Services | None = None) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.opts = conf.rbd
        rbd_utils.require_bindings()
        if not self.opts.secret_uuid:
            raise cd_exception.InvalidConfig(
                reason="[rbd] secret_uuid is not set: define a libvirt secret of usage type "
                "'ceph' holding the key of client.%s, with the same UUID on every host, "
                "and set its UUID there" % self.opts.user
            )
        for option in ("ceph_conf", "keyring"):
            path = getattr(self.opts, option)
            if path and not os.access(path, os.R_OK):
                raise cd_exception.InvalidConfig(
                    reason="[rbd] %s: %s is missing or not readable" % (option, path)
                )
        user = self.opts.user
        self.settings = rbd_utils.ClusterSettings(
            backend=self.name,
            conffile=self.opts.ceph_conf,
            # NOTE: accept "client.x" too; librados and libvirt both want "x".
            user=user[len("client.") :] if user.startswith("client.") else user,
            keyring=self.opts.keyring,
            pool=self.opts.pool,
            connect_timeout=self.opts.connect_timeout,
            op_timeout=self.opts.op_timeout,
        )
        self._locks_lock = threading.Lock()
        self._image_locks: dict[str, threading.Lock] = {}
        self._warned_no_space = False

    def describe(self) -> base.Description:
        return base.Description(
            name=self.name,
            shared=True,
            formats=("raw",),
            linked_clone=True,
            snapshots=True,
            resize=True,
        )

    # --- helpers ------------------------------------------------------------

    def _volume_name(self, volume_id: str) -> str:
        base.check_volume_name(volume_id)
        if volume_id.startswith(IMAGE_PREFIX):
            raise exception.InvalidVolumeName(
                volume=volume_id, reason="names starting %r are imported images" % IMAGE_PREFIX
            )
        return volume_id

    def _session(self, operation: str, volume: str):
        return rbd_utils.connected(self.settings, operation, volume)

    def _ioctx(self, client: Any, operation: str, volume: str):
        return rbd_utils.pool_ioctx(client, self.settings, operation, volume)

    def _volume(self, volume_id: str, size: int) -> base.Volume:
        return base.Volume(
            id=volume_id,
            backend=self.name,
            size_gb=math.ceil(size / GiB),
            format="raw",
            location="%s/%s" % (self.settings.pool, volume_id),
        )

    def _image_lock(self, image_uuid: str) -> threading.Lock:
        with self._locks_lock:
            return self._image_locks.setdefault(image_uuid, threading.Lock())

    def _open(self, ioctx: Any, name: str, read_only: bool = False) -> Any:
        """The open image ``name``, or None if there is none."""
        try:
            return rbd_utils.rbd.Image(ioctx, name, read_only=read_only)
        except rbd_utils.rbd.ImageNotFound:
            return None

    # --- capacity -----------------------------------------------------------

    def capacity(self) -> base.Capacity:
        """Space of the pool, from the cluster (``ceph df``), and what volumes promise.

        ``total`` is the pool's stored bytes plus its ``max_avail`` (which
        counts replication and quotas); ``provisioned`` is the sum of the
        images' sizes.
        A cluster without a ceph-mgr reports no space: total and free are 0.
        """
        with self._session("capacity", self.settings.pool) as client:
            df = rbd_utils.mon_command(client, self.settings, prefix="df")
            with self._ioctx(client, "capacity", self.settings.pool) as ioctx:
                stats = rbd_utils.rbd.RBD().pool_stats_get(ioctx)
        total, free = rbd_utils.pool_space(df, self.settings.pool)
        if not total and not self._warned_no_space:
            self._warned_no_space = True
            LOG.warning(
                "Ceph reports no space for pool %s (is a ceph-mgr active?)", self.settings.pool
            )
        return base.Capacity(
            total=total, free=free, provisioned=int(stats["image_provisioned_bytes"])
        )

    # --- volumes ------------------------------------------------------------

    def create_from_image(
        self, volume_id: str, image: ImageSpec, size_gb: int, linked: bool = True
    ) -> base.Volume:
        """A COW clone of the image's ``base`` snapshot, grown to ``size_gb``.

        ``linked=False`` flattens the clone before it is named: a full copy.

        The image is imported on first use. The clone is made as
        ``<volume_id>.creating`` and renamed when complete, so a crash leaves
        no volume that looks finished.
        """
        name = self._volume_name(volume_id)
        base.check_volume_name(image.uuid)
        with self._session("create", name) as client, self._ioctx(client, "create", name) as ioctx:
            existing = self._open(ioctx, name, read_only=True)
            if existing is not None:
                with existing:
                    return self._volume(name, existing.size())
            parent, parent_size = self._ensure_image(ioctx, image)
            size = max(size_gb * GiB, parent_size)
            tmp = name + CREATING
            self._remove_image(client, ioctx, tmp)  # a crashed attempt's leftover
            rbd_utils.rbd.RBD().clone(ioctx, parent, BASE_SNAP, ioctx, tmp)
            try:
                with rbd_utils.rbd.Image(ioctx, tmp) as volume:
                    if volume.size() < size:
                        volume.resize(size)
                    depth = len(rbd_utils.parent_chain(client, volume))
                    if not linked:
                        LOG.info("Flattening %s: a full copy was asked for", name)
                        volume.flatten()
                    elif depth > self.opts.max_clone_depth:
                        LOG.info(
                            "Flattening %s: %d ancestors, [rbd] max_clone_depth is %d",
                            name,
                            depth,
                            self.opts.max_clone_depth,
                        )
                        volume.flatten()
                rbd_utils.rbd.RBD().rename(ioctx, tmp, name)
            except BaseException:
                try:
                    self._remove_image(client, ioctx, tmp)
                except Exception:
                    LOG.exception("Could not remove %s/%s", self.settings.pool, tmp)
                raise
        LOG.info("Created volume %s/%s from image %s", self.settings.pool, name, image.uuid)
        return self._volume(name, size)

    def create_volume(self, volume_id: str, size_gb: int) -> base.Volume:
        """An empty volume of ``size_gb`` (thin: RBD allocates on write). Idempotent."""
        name = self._volume_name(volume_id)
        with self._session("create", name) as client, self._ioctx(client, "create", name) as ioctx:
            existing = self._open(ioctx, name, read_only=True)
            if existing is not None:
                with existing:
                    return self._volume(name, existing.size())
            tmp = name + CREATING
            self._remove_image(client, ioctx, tmp)  # a crashed attempt's leftover
            # NOTE: made under a temporary name and renamed, like a clone: a
            # crash never leaves a volume that looks finished.
            rbd_utils.rbd.RBD().create(ioctx, tmp, size_gb * GiB, old_format=False)
            rbd_utils.rbd.RBD().rename(ioctx, tmp, name)
        LOG.info("Created empty volume %s/%s (%d GiB)", self.settings.pool, name, size_gb)
        return self._volume(name, size_gb * GiB)

    def get_volume(self, volume_id: str) -> base.Volume:
        """The volume with its current size.

        :raises BackendVolumeNotFound: no such volume.
        """
        name = self._volume_name(volume_id)
        with self._session("get", name) as client, self._ioctx(client, "get", name) as ioctx:
            volume = self._open(ioctx, name, read_only=True)
            if volume is None:
                raise exception.BackendVolumeNotFound(volume=name, backend=self.name)
            with volume:
                return self._volume(name, volume.size())

    def import_image(self, image: ImageSpec) -> None:
        """Import ``image`` into the pool with its protected ``base`` snapshot (idempotent)."""
        base.check_volume_name(image.uuid)
        with self._session("import", image.uuid) as client:
            with self._ioctx(client, "import", image.uuid) as ioctx:
                self._ensure_image(ioctx, image)

    def _ensure_image(self, ioctx: Any, image: ImageSpec) -> tuple[str, int]:
        """Name and size of the imported ``image``, importing it on first use."""
        name = IMAGE_PREFIX + image.uuid
        with self._image_lock(image.uuid):
            found = self._open(ioctx, name)
            if found is not None:
                with found:
                    self._protect_base(found)
                    return name, found.size()
            self._import(ioctx, image, name)
            with rbd_utils.rbd.Image(ioctx, name, read_only=True) as imported:
                return name, imported.size()

    def _protect_base(self, image: Any) -> None:
        """Make sure ``image`` has the protected snapshot clones come from."""
        if not any(s["name"] == BASE_SNAP for s in image.list_snaps()):
            image.create_snap(BASE_SNAP)
        if not image.is_protected_snap(BASE_SNAP):
            image.protect_snap(BASE_SNAP)

    def _import(self, ioctx: Any, image: ImageSpec, name: str) -> None:
        """Write ``image`` into the pool as ``name`` with a protected ``base`` snapshot.

        It is written under a unique temporary name and renamed at the end:
        two hosts importing the same image at once both succeed, one rename
        wins, and the other's copy is removed.
        """
        if not os.path.isfile(image.path):
            raise cd_exception.StorageError(
                operation="import image",
                volume=image.uuid,
                reason="%s is not in the image store" % image.path,
            )
        tmp = "%s.importing-%s" % (name, uuid.uuid4().hex[:8])
        with rbd_utils.raw_file(
            image.path, image.disk_format, self.opts.image_conversion_dir
        ) as raw:
            size = os.path.getsize(raw)
            rbd_utils.rbd.RBD().create(ioctx, tmp, size, old_format=False)
            try:
                with rbd_utils.rbd.Image(ioctx, tmp) as target:
                    written = rbd_utils.write_file(target, raw)
                    self._protect_base(target)
                try:
                    rbd_utils.rbd.RBD().rename(ioctx, tmp, name)
                except rbd_utils.rbd.ImageExists:
                    LOG.info("Image %s was imported by another host meanwhile", image.uuid)
                    self._remove_image(None, ioctx, tmp)
                    return
            except BaseException:
                try:
                    self._remove_image(None, ioctx, tmp)
                except Exception:
                    LOG.exception("Could not remove %s/%s", self.settings.pool, tmp)
                raise
        LOG.info(
            "Imported image %s into %s/%s (%d bytes, %d written)",
            image.uuid,
            self.settings.pool,
            name,
            size,
            written,
        )

    def _remove_image(self, client: Any, ioctx: Any, name: str) -> bool:
        """Remove image ``name`` and its snapshots; False if there was none.

        :raises VolumeHasClones: a snapshot has clones.
        :raises VolumeBusy: a client (a guest) has the image open.
        """
        image = self._open(ioctx, name)
        if image is None:
            return False
        with image:
            if client is not None:
                watchers = rbd_utils.other_watchers(client, image)
                if watchers:
                    raise exception.VolumeBusy(
                        backend=self.name,
                        volume=name,
                        reason="open by %s (a running guest?)" % ", ".join(watchers),
                    )
            snaps = list(image.list_snaps())
            clones = []
            for snap in snaps:
                if image.is_protected_snap(snap["name"]):
                    image.set_snap(snap["name"])
                    clones += ["%s/%s" % child for child in image.list_children()]
                    image.set_snap(None)
            if clones:
                raise exception.VolumeHasClones(
                    backend=self.name, volume=name, clones=", ".join(sorted(clones))
                )
            for snap in snaps:
                if image.is_protected_snap(snap["name"]):
                    image.unprotect_snap(snap["name"])
                image.remove_snap(snap["name"])
        try:
            rbd_utils.rbd.RBD().remove(ioctx, name)
        except rbd_utils.rbd.ImageNotFound:
            return False
        return True

    def delete_volume(self, volume_id: str) -> None:
        """Remove the volume and its snapshots. Idempotent.

        :raises VolumeHasClones: a snapshot of it has linked clones.
        :raises VolumeBusy: a guest still has it open.
        """
        name = self._volume_name(volume_id)
        with self._session("delete", name) as client, self._ioctx(client, "delete", name) as ioctx:
            removed = [n for n in (name, name + CREATING) if self._remove_image(client, ioctx, n)]
        if removed:
            LOG.info("Deleted volume %s/%s", self.settings.pool, name)

    def resize_volume(self, volume_id: str, size_gb: int) -> base.Volume:
        """Grow the volume to ``size_gb``; the same size is a no-op.

        :raises InvalidVolumeSize: smaller than it is (shrinking loses data).
        :raises BackendVolumeNotFound: no such volume.
        """
        name = self._volume_name(volume_id)
        with self._session("resize", name) as client, self._ioctx(client, "resize", name) as ioctx:
            volume = self._open_volume(ioctx, name)
            with volume:
                size = volume.size()
                if size_gb * GiB < size:
                    raise exception.InvalidVolumeSize(
                        volume=name,
                        size_gb=size_gb,
                        reason="it is %g GiB and shrinking would lose data" % (size / GiB),
                    )
                if size_gb * GiB > size:
                    volume.resize(size_gb * GiB)
                    LOG.info("Grew volume %s to %d GiB", name, size_gb)
        return self._volume(name, max(size, size_gb * GiB))

    def _open_volume(self, ioctx: Any, name: str) -> Any:
        volume = self._open(ioctx, name)
        if volume is None:
            raise exception.BackendVolumeNotFound(volume=name, backend=self.name)
        return volume

    def disk_config(self, volume: base.Volume) -> lvxml.Disk:
        """A network disk QEMU opens with librbd, as ``user``, key from the libvirt secret.

        The monitors come from the cluster's monitor map, so a changed
        monitor set needs no configuration change on the hosts.

        :raises BackendUnavailable: the monitors could not be asked.
        """
        with self._session("disk_config", volume.id) as client:
            monitors = rbd_utils.monitor_addresses(client, self.settings)
        return lvxml.Disk(
            type="network",
            device="disk",
            driver_name="qemu",
            driver_type="raw",
            # NOTE: writeback turns on librbd's cache, which Ceph recommends for
            # QEMU; librbd flushes it on live migration, so it stays safe.
            cache="writeback",
            discard="unmap",
            source_protocol="rbd",
            source_name=volume.location,
            hosts=[lvxml.DiskHost(name=host, port=port) for host, port in monitors],
            auth_username=self.settings.user,
            auth_secret_type="ceph",
            auth_secret_uuid=self.opts.secret_uuid,
        )

    # --- snapshots ----------------------------------------------------------

    def create_snapshot(self, volume_id: str, snapshot: str) -> None:
        """Snapshot the volume (crash-consistent if a guest is writing to it).

        :raises DuplicateName: the volume has a snapshot of that name.
        :raises BackendVolumeNotFound: no such volume.
        """
        name = self._volume_name(volume_id)
        base.check_volume_name(snapshot)
        with self._session("snapshot", name) as client, self._ioctx(client, "snapshot", name) as io:
            with self._open_volume(io, name) as volume:
                if any(s["name"] == snapshot for s in volume.list_snaps()):
                    raise cd_exception.DuplicateName(what="Snapshot of " + name, name=snapshot)
                volume.create_snap(snapshot)
        LOG.info("Snapshot %s of volume %s created", snapshot, name)

    def list_snapshots(self, volume_id: str) -> list[dict[str, Any]]:
        """The volume's snapshots, oldest first: ``name``, ``size_gb``, ``created_at``.

        :raises BackendVolumeNotFound: no such volume.
        """
        name = self._volume_name(volume_id)
        with self._session("list", name) as client, self._ioctx(client, "list", name) as ioctx:
            with self._open_volume(ioctx, name) as volume:
                found = []
                for snap in sorted(volume.list_snaps(), key=lambda s: s["id"]):
                    stamp = volume.get_snap_timestamp(snap["id"])
                    found.append(
                        {
                            "name": snap["name"],
                            "size_gb": math.ceil(snap["size"] / GiB),
                            "created_at": stamp.replace(tzinfo=datetime.UTC).isoformat(),
                        }
                    )
        return found

    def revert_to_snapshot(self, volume_id: str, snapshot: str) -> None:
        """Put the volume back as it was at ``snapshot`` (size included).

        :raises VolumeBusy: a guest has the volume open; stop it first.
        :raises VolumeSnapshotNotFound, BackendVolumeNotFound: no such snapshot or volume.
        """
        name = self._volume_name(volume_id)
        base.check_volume_name(snapshot)
        with self._session("revert", name) as client, self._ioctx(client, "revert", name) as io:
            with self._open_volume(io, name) as volume:
                self._check_snapshot(volume, name, snapshot)
                # NOTE: librbd would take the exclusive lock from a running QEMU
                # (the lock is cooperative) and change the disk under the guest.
                watchers = rbd_utils.other_watchers(client, volume)
                if watchers:
                    raise exception.VolumeBusy(
                        backend=self.name,
                        volume=name,
                        reason="open by %s; stop the guest before reverting" % ", ".join(watchers),
                    )
                volume.rollback_to_snap(snapshot)
        LOG.info("Volume %s reverted to snapshot %s", name, snapshot)

    def delete_snapshot(self, volume_id: str, snapshot: str) -> None:
        """Remove a snapshot. Idempotent (a missing snapshot or volume is not an error).

        :raises VolumeHasClones: the snapshot has linked clones.
        """
        name = self._volume_name(volume_id)
        base.check_volume_name(snapshot)
        with self._session("delete snapshot", name) as client:
            with self._ioctx(client, "delete snapshot", name) as ioctx:
                volume = self._open(ioctx, name)
                if volume is None:
                    return
                with volume:
                    if not any(s["name"] == snapshot for s in volume.list_snaps()):
                        return
                    if volume.is_protected_snap(snapshot):
                        volume.set_snap(snapshot)
                        clones = ["%s/%s" % child for child in volume.list_children()]
                        volume.set_snap(None)
                        if clones:
                            raise exception.VolumeHasClones(
                                backend=self.name,
                                volume="%s@%s" % (name, snapshot),
                                clones=", ".join(sorted(clones)),
                            )
                        volume.unprotect_snap(snapshot)
                    volume.remove_snap(snapshot)
        LOG.info("Snapshot %s of volume %s deleted", snapshot, name)

    def _check_snapshot(self, volume: Any, name: str, snapshot: str) -> None:
        if not any(s["name"] == snapshot for s in volume.list_snaps()):
            raise exception.VolumeSnapshotNotFound(
                snapshot=snapshot, volume=name, backend=self.name
            )
