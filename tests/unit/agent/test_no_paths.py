"""The agent takes no filesystem path from a message (issue 12, item 4, the
image half): an image's files and an export's target are derived from the
agent's own ``[image] store_path`` and UUIDs."""

from __future__ import annotations

import os
import uuid as uuidlib

import pytest

from compute_driver import disk_image, exception
from compute_driver.agent import manager as agent_manager
from compute_driver.objects import ImageSpec
from compute_driver.rpc import schemas
from compute_driver.scheduler.imagestore import agent_image

IMAGE_UUID = str(uuidlib.uuid4())
WIRE_IMAGE = {
    "uuid": IMAGE_UUID,
    "name": "tiny",
    "disk_format": "qcow2",
    "virtual_size": 1024,
    "kernel": True,
}


def _check(method: str, payload: dict) -> None:
    schemas.validate("compute", method, schemas.COMPUTE_METHODS[method], payload)


@pytest.mark.parametrize("field", ["path", "kernel_path", "initrd_path"])
def test_an_image_with_a_path_is_refused_by_the_schema(field):
    image = {**WIRE_IMAGE, field: "/etc/shadow"}
    with pytest.raises(exception.InvalidPayload, match="unexpected"):
        _check(
            "create_volume",
            {"volume": {"id": "v1", "backend": "dir", "size_gb": 1}, "image": image},
        )


def test_export_root_disk_takes_no_path():
    uuid = str(uuidlib.uuid4())
    with pytest.raises(exception.InvalidPayload):
        _check("export_root_disk", {"uuid": uuid, "path": "/etc/passwd"})
    with pytest.raises(exception.InvalidPayload):
        _check("export_root_disk", {"uuid": uuid, "image": "../../etc"})
    _check("export_root_disk", {"uuid": uuid, "image": IMAGE_UUID})


def test_image_files_are_derived_from_the_store_and_the_uuid():
    spec = ImageSpec.from_wire(WIRE_IMAGE, "/srv/images")
    assert spec.path == "/srv/images/%s/disk.qcow2" % IMAGE_UUID
    assert spec.kernel_path == "/srv/images/%s/kernel" % IMAGE_UUID
    assert spec.initrd_path == "/srv/images/%s/initrd" % IMAGE_UUID
    plain = ImageSpec.from_wire({**WIRE_IMAGE, "kernel": False}, "/srv/images")
    assert plain.kernel_path is None and plain.initrd_path is None


def test_the_scheduler_sends_no_paths():
    record = {
        "uuid": IMAGE_UUID,
        "name": "tiny",
        "disk_format": "raw",
        "path": "/var/lib/compute-driver/images/%s/disk.raw" % IMAGE_UUID,
        "virtual_size": 1,
        "kernel_path": "/var/lib/compute-driver/images/%s/kernel" % IMAGE_UUID,
        "initrd_path": "/var/lib/compute-driver/images/%s/initrd" % IMAGE_UUID,
        "cmdline": None,
        "properties": {},
        "checksum": "x",
    }
    wire = agent_image(record)
    assert not [k for k, v in wire.items() if isinstance(v, str) and "/" in v]
    schemas.validate("compute", "IMAGE", schemas.IMAGE, wire)


def test_an_export_needs_the_work_directory_the_scheduler_made(tmp_path):
    with pytest.raises(exception.InvalidImage, match="no export of it is under way"):
        agent_manager._reserve_export(str(tmp_path), IMAGE_UUID)
    # A symlink in the work directory's place is not a directory.
    os.symlink("/tmp", disk_image.export_dir(str(tmp_path), IMAGE_UUID))
    with pytest.raises(exception.InvalidImage, match="no export of it is under way"):
        agent_manager._reserve_export(str(tmp_path), IMAGE_UUID)


def test_an_export_never_overwrites_a_file(tmp_path):
    work = disk_image.export_dir(str(tmp_path), IMAGE_UUID)
    os.mkdir(work)
    path = agent_manager._reserve_export(str(tmp_path), IMAGE_UUID)
    assert path == os.path.join(work, "disk.qcow2")
    assert os.stat(path).st_size == 0 and oct(os.stat(path).st_mode & 0o777) == "0o600"
    with pytest.raises(exception.InvalidImage, match="already written"):
        agent_manager._reserve_export(str(tmp_path), IMAGE_UUID)
    os.unlink(path)
    os.symlink("/etc/passwd", path)
    with pytest.raises(exception.InvalidImage, match="already written"):
        agent_manager._reserve_export(str(tmp_path), IMAGE_UUID)


def test_a_uuid_that_is_not_one_names_no_file():
    with pytest.raises(exception.InvalidImage):
        disk_image.stored_disk("/srv/images", "../../etc", "raw")
    with pytest.raises(exception.InvalidImage):
        disk_image.export_dir("/srv/images", "x/../../y")
