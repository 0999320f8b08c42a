"""Image import: only from the import directory, only regular files, every
image probed before it is touched (issue 12, items 1 to 3).

The hostile images are the corpus in tests/fixtures/hostile_images (made by
its make.py); a symlink, a FIFO and a device are made here. Every refusal
is one InvalidImage and leaves nothing in the store.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
import uuid as uuidlib
from pathlib import Path

import pytest

from compute_driver import disk_image, exception
from compute_driver.scheduler.imagestore import ImageStore

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "hostile_images"
MiB = 1024 * 1024


@pytest.fixture
def import_dir(tmp_path: Path) -> Path:
    path = tmp_path / "import"
    path.mkdir()
    for item in CORPUS.iterdir():
        if item.suffix != ".py":
            shutil.copy(item, path / item.name)
    return path


@pytest.fixture
def store(tmp_path: Path, import_dir: Path, qemu_img: str) -> ImageStore:
    limits = disk_image.Limits(max_bytes=64 * MiB, max_virtual_bytes=16 * 1024 * MiB)
    return ImageStore(str(tmp_path / "store"), str(import_dir), limits)


def _stored(store: ImageStore) -> list[str]:
    """What the store holds (temporary directories included)."""
    return sorted(os.listdir(store.root)) if os.path.isdir(store.root) else []


def _refused(store: ImageStore, *args: str | None, **kwargs: str | None) -> str:
    with pytest.raises(exception.InvalidImage) as info:
        store.import_files(str(uuidlib.uuid4()), "hostile", *args, **kwargs)  # type: ignore[arg-type]
    assert _stored(store) == [], "a refused import left files behind"
    message = info.value.message
    assert "\n" not in message
    return message


# --- where an import may read ---------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["/etc/shadow", "/proc/self/environ", "../../../../etc/shadow", "sub/../../x", "./good.qcow2"],
)
def test_names_outside_the_import_directory_are_refused(store, name):
    assert "import_path" in _refused(store, name) or "'..'" in _refused(store, name)


def test_a_symlink_to_a_host_file_is_refused(store, import_dir):
    os.symlink("/etc/shadow", import_dir / "shadow.raw")
    assert "symbolic link" in _refused(store, "shadow.raw")


def test_a_symlinked_directory_is_not_followed(store, import_dir):
    os.symlink("/etc", import_dir / "etc")
    assert "symbolic link" in _refused(store, "etc/shadow")


def test_a_fifo_is_refused_at_once(store, import_dir):
    os.mkfifo(import_dir / "pipe.raw")
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            store.import_files(str(uuidlib.uuid4()), "fifo", "pipe.raw")
        except BaseException as exc:
            outcome.append(exc)

    # NOTE: no writer ever opens the FIFO: an importer that opened it for
    # reading would wait forever (61 s and a traceback on 1fcb116).
    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the import waited on the FIFO"
    assert isinstance(outcome[0], exception.InvalidImage)
    assert "FIFO" in outcome[0].message
    assert _stored(store) == []


def test_a_device_is_refused_unread(store, import_dir):
    os.mknod(import_dir / "zero.raw", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    assert "device" in _refused(store, "zero.raw")


def test_a_directory_is_refused(store, import_dir):
    (import_dir / "dir.raw").mkdir()
    assert "directory" in _refused(store, "dir.raw")


def test_a_missing_file_is_refused(store):
    assert "does not exist" in _refused(store, "nothing.qcow2")


@pytest.mark.parametrize("which", ["kernel", "initrd"])
def test_a_host_kernel_or_initrd_is_refused_and_nothing_is_stored(store, which):
    files = {"kernel": "good.qcow2", "initrd": "good.qcow2", which: "/etc/shadow"}
    assert "import_path" in _refused(store, "good.qcow2", **files)


def test_a_size_that_lies_is_refused(tmp_path):
    # /proc files say 0 bytes and have more: the copy counts, stat is not trusted.
    fd = os.open("/proc/self/environ", os.O_RDONLY)
    try:
        with pytest.raises(exception.InvalidImage, match="said it had 0 bytes"):
            disk_image.copy_bounded(fd, str(tmp_path / "copy"), MiB, "environ")
    finally:
        os.close(fd)
    assert not (tmp_path / "copy").exists()


def test_the_size_limit_is_enforced(tmp_path, import_dir, qemu_img):
    limits = disk_image.Limits(max_bytes=100 * 1024, max_virtual_bytes=1024 * MiB)
    small = ImageStore(str(tmp_path / "store"), str(import_dir), limits)
    assert "more than the 102400" in _refused(small, "good.qcow2")


# --- what an image may contain ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("flat-extent-shadow.vmdk", "create-type monolithicFlat"),
        ("backing-shadow.qcow2", "backing file"),
        ("data-file-shadow.qcow2", "external data file"),
        ("qcow2-header.raw", "said to be raw but its content is qcow2"),
        ("one-eib.qcow2", "virtual size 1152921504606846976 bytes"),
        ("truncated.qcow2", "corrupt or truncated"),
        ("text.vmdk", "said to be vmdk but its content is raw"),
    ],
)
def test_the_hostile_corpus_is_refused(store, name, reason):
    assert reason in _refused(store, name)


def test_a_raw_claim_over_qcow2_content_is_refused(store, import_dir):
    shutil.copy(import_dir / "good.qcow2", import_dir / "disk.img")
    assert "said to be raw" in _refused(store, "disk.img", disk_format="raw")


def test_vmdk_extents_other_than_the_image_are_refused():
    info = {"filename": "/store/.import-x/source", "format": "vmdk"}
    specific = {
        "create-type": "monolithicSparse",
        "extents": [{"filename": "/store/.import-x/source"}, {"filename": "/etc/shadow"}],
    }
    limits = disk_image.Limits(max_bytes=MiB, max_virtual_bytes=MiB)
    with pytest.raises(exception.InvalidImage, match="extents outside the image"):
        disk_image._check_vmdk("x", info, specific, limits)


def test_vmdk_allowed_types_can_refuse_every_vmdk(tmp_path, import_dir, qemu_img):
    limits = disk_image.Limits(max_bytes=64 * MiB, max_virtual_bytes=MiB, vmdk_types=())
    strict = ImageStore(str(tmp_path / "store"), str(import_dir), limits)
    assert "streamOptimized is not one of" in _refused(strict, "good-stream.vmdk")


def test_probes_run_under_resource_limits(monkeypatch, tmp_path):
    seen: list[list[str]] = []

    def fake_run(args, **kwargs):
        seen.append(args)
        raise FileNotFoundError(2, "fake", args[0])

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(exception.InvalidImage):
        disk_image.qemu_img_info(str(tmp_path / "x"), "x")
    assert seen[0][:4] == ["prlimit", "--as=%d" % 1024**3, "--cpu=30", "--"]
    assert seen[0][4:7] == ["qemu-img", "info", "--output=json"]


# --- what an import stores ----------------------------------------------------


def test_a_good_qcow2_is_stored_readable_by_the_services_only(store, import_dir):
    uuid = str(uuidlib.uuid4())
    fields = store.import_files(uuid, "good", "good.qcow2", "text.vmdk", "text.vmdk")
    assert fields["disk_format"] == "qcow2"
    assert fields["virtual_size"] == 16 * MiB
    assert _stored(store) == [uuid]
    image_dir = Path(store.root) / uuid
    assert sorted(os.listdir(image_dir)) == ["disk.qcow2", "initrd", "kernel"]
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(image_dir).st_mode) == 0o711
    for name in os.listdir(image_dir):
        assert stat.S_IMODE(os.stat(image_dir / name).st_mode) == 0o600, name
    assert (image_dir / "disk.qcow2").read_bytes() == (import_dir / "good.qcow2").read_bytes()
    assert fields["path"] == disk_image.stored_disk(store.root, uuid, "qcow2")
    assert fields["kernel_path"] == disk_image.stored_file(store.root, uuid, "kernel")


def test_a_stream_optimized_vmdk_is_converted_with_its_format_forced(store, import_dir, qemu_img):
    uuid = str(uuidlib.uuid4())
    fields = store.import_files(uuid, "stream", "good-stream.vmdk")
    assert fields["disk_format"] == "qcow2"
    stored = Path(store.root) / uuid / "disk.qcow2"
    assert sorted(os.listdir(stored.parent)) == ["disk.qcow2"]
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600
    same = subprocess.run(
        [qemu_img, "compare", "-f", "vmdk", "-F", "qcow2", import_dir / "good-stream.vmdk", stored],
        capture_output=True,
    )
    assert same.returncode == 0, same.stdout


def test_an_image_in_a_subdirectory_is_found(store, import_dir):
    (import_dir / "team").mkdir()
    shutil.copy(import_dir / "good.qcow2", import_dir / "team" / "disk.qcow2")
    uuid = str(uuidlib.uuid4())
    assert store.import_files(uuid, "sub", "team/disk.qcow2")["disk_format"] == "qcow2"


def test_an_import_never_replaces_stored_files(store, import_dir):
    uuid = str(uuidlib.uuid4())
    os.makedirs(os.path.join(store.root, uuid, "debris"))
    with pytest.raises(exception.InvalidImage, match="already in the image store"):
        store.import_files(uuid, "again", "good.qcow2")
    assert _stored(store) == [uuid]
    assert os.listdir(os.path.join(store.root, uuid)) == ["debris"]
