"""Attacks on image import after issue 12 (the attack branch).

A hard link is a second name of a file that may live outside the import
directory: ``open_beneath`` follows no symlink, but a hard link is no
symlink, so a link to a host file (made by whoever can write into the
import directory, e.g. root or an upload tool on the same file system) was
imported byte for byte.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from pathlib import Path

import pytest

from compute_driver import disk_image, exception
from compute_driver.scheduler.imagestore import ImageStore

MiB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path, qemu_img: str) -> ImageStore:
    (tmp_path / "import").mkdir()
    limits = disk_image.Limits(max_bytes=64 * MiB, max_virtual_bytes=16 * 1024 * MiB)
    return ImageStore(str(tmp_path / "store"), str(tmp_path / "import"), limits)


@pytest.mark.parametrize("which", ["disk", "kernel", "initrd"])
def test_a_hard_link_to_a_file_outside_is_refused(store: ImageStore, tmp_path: Path, which) -> None:
    outside = tmp_path / "host-secret"
    outside.write_bytes(b"root:$6$secret:19000:0:99999:7:::\n" * 16)
    os.link(outside, Path(store.import_root) / "linked.raw")
    (Path(store.import_root) / "ok.raw").write_bytes(b"\0" * 4096)
    names = {"disk": "ok.raw", "kernel": None, "initrd": None}
    names[which] = "linked.raw"
    with pytest.raises(exception.InvalidImage) as info:
        store.import_files(
            str(uuidlib.uuid4()),
            "hostile",
            names["disk"],  # type: ignore[arg-type]
            kernel=names["kernel"],
            initrd=names["initrd"],
        )
    assert "hard link" in info.value.message
    assert not os.path.isdir(store.root) or os.listdir(store.root) == []
