"""The dir backend's linked clones, full copies and exports, with the real qemu-img."""

from __future__ import annotations

import json
import subprocess
import uuid as uuidlib

import pytest
from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver.virt.base import ImageSpec
from storage_backends.dir import DirStorageBackend


def _info(path) -> dict:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "--force-share", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


@pytest.fixture
def backend(tmp_path) -> DirStorageBackend:
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("state_path", str(tmp_path))
    return DirStorageBackend(conf)


@pytest.fixture
def image(tmp_path) -> ImageSpec:
    path = tmp_path / "image.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return ImageSpec(
        uuid=str(uuidlib.uuid4()),
        name="img",
        disk_format="qcow2",
        path=str(path),
        virtual_size=64 * 1024**2,
    )


def test_linked_clone_backs_onto_the_cached_image(backend, image) -> None:
    volume = backend.create_from_image("v1", image, 1)
    info = _info(volume.location)
    assert info["backing-filename"] == backend.cached_image(image)
    assert info["virtual-size"] == 1024**3


def test_full_copy_stands_alone_and_is_resized(backend, image) -> None:
    volume = backend.create_from_image("v2", image, 1, linked=False)
    info = _info(volume.location)
    assert "backing-filename" not in info and info["virtual-size"] == 1024**3


def test_export_flattens_the_chain(backend, image, tmp_path) -> None:
    backend.create_from_image("v3", image, 1)
    dest = tmp_path / "export.qcow2"
    backend.export_volume("v3", str(dest))
    info = _info(dest)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert backend.describe()["export"] is True
