"""The ``dir`` backend: volumes are files in a local directory.

Root disks are qcow2 overlays whose backing file is a cached copy of the
image, so creating one costs the same whatever the image's size.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from typing import Any

from oslo_config import cfg

from compute_driver import exception as cd_exception
from compute_driver.virt.base import ImageSpec
from compute_driver.virt.libvirt import xml as lvxml
from storage_backends import base, qemu_img

LOG = logging.getLogger(__name__)

GROUP = cfg.OptGroup(
    "dir", title="dir storage backend", help="Volumes as files in a local directory."
)

OPTS = [
    cfg.StrOpt(
        "path",
        default="$state_path/volumes",
        help="Directory of the volume files. It must be traversable by the QEMU user (mode 0755).",
    ),
    cfg.StrOpt(
        "image_cache_path",
        default="$state_path/image-cache",
        help="Directory of cached image copies that root disks back onto. "
        "A cached image is the base of every root disk made from it: never "
        "delete one by hand while any disk uses it.",
    ),
]


def list_opts() -> dict:
    return {GROUP: OPTS}


class DirStorageBackend(base.StorageBackend):
    """Volumes as qcow2 files; root disks as overlays on cached images."""

    name = "dir"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.opts = conf.dir
        self._cache_lock = threading.Lock()
        for path in (self.opts.path, self.opts.image_cache_path):
            os.makedirs(path, mode=0o755, exist_ok=True)

    def describe(self) -> dict[str, Any]:
        return {
            "export": True,
            "name": self.name,
            "shared": False,
            "formats": ["qcow2"],
            "linked_clone": True,
            "snapshots": False,
        }

    def capacity(self) -> base.Capacity:
        st = os.statvfs(self.opts.path)
        return base.Capacity(total=st.f_blocks * st.f_frsize, free=st.f_bavail * st.f_frsize)

    def _volume_path(self, volume_id: str) -> str:
        return os.path.join(self.opts.path, base.check_volume_name(volume_id) + ".qcow2")

    def cached_image(self, image: ImageSpec) -> str:
        """The path of the cached copy of ``image``, copying it in on first use."""
        cached = os.path.join(self.opts.image_cache_path, base.check_volume_name(image.uuid))
        with self._cache_lock:
            if os.path.exists(cached):
                return cached
            if not os.path.isfile(image.path):
                raise cd_exception.StorageError(
                    operation="cache image",
                    volume=image.uuid,
                    reason="%s is not in the image store" % image.path,
                )
            fd, tmp = tempfile.mkstemp(prefix=".caching-", dir=self.opts.image_cache_path)
            os.close(fd)
            try:
                shutil.copyfile(image.path, tmp)
                os.chmod(tmp, 0o644)
                os.rename(tmp, cached)
            except BaseException:
                os.unlink(tmp)
                raise
            LOG.info("Cached image %s at %s", image.uuid, cached)
            return cached

    def create_from_image(
        self, volume_id: str, image: ImageSpec, size_gb: int, linked: bool = True
    ) -> base.Volume:
        path = self._volume_path(volume_id)
        if os.path.exists(path):
            return self._volume(volume_id, path, size_gb)
        base_path = self.cached_image(image)
        size = max(size_gb * 1024**3, image.virtual_size)
        tmp = path + ".part"
        try:
            if linked:
                qemu_img.run(
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    image.disk_format,
                    "-b",
                    base_path,
                    tmp,
                    str(size),
                )
            else:
                # A full copy: the volume no longer needs the cached image.
                qemu_img.run(
                    "convert", "-q", "-f", image.disk_format, "-O", "qcow2", base_path, tmp
                )
                qemu_img.run("resize", "-q", "-f", "qcow2", tmp, str(size))
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return self._volume(volume_id, path, size_gb)

    def _volume(self, volume_id: str, path: str, size_gb: int) -> base.Volume:
        return base.Volume(
            id=volume_id, backend=self.name, size_gb=size_gb, format="qcow2", location=path
        )

    def export_volume(self, volume_id: str, dest: str) -> None:
        """Write the volume as one standalone qcow2 file at ``dest`` (its
        backing chain flattened), e.g. to make an image of a stopped server.

        :raises StorageError: qemu-img failed; ``dest`` is removed.
        """
        try:
            qemu_img.run("convert", "-q", "-O", "qcow2", self._volume_path(volume_id), dest)
            os.chmod(dest, 0o644)
        except BaseException:
            if os.path.exists(dest):
                os.unlink(dest)
            raise

    def delete_volume(self, volume_id: str) -> None:
        path = self._volume_path(volume_id)
        for candidate in (path, path + ".part"):
            try:
                os.unlink(candidate)
            except FileNotFoundError:
                pass

    def disk_config(self, volume: base.Volume) -> lvxml.Disk:
        return lvxml.Disk(
            type="file",
            device="disk",
            driver_name="qemu",
            driver_type="qcow2",
            source_file=volume.location,
            cache="none",
            discard="unmap",
        )
