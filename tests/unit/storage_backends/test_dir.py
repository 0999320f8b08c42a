"""The dir backend with the real qemu-img: volumes, clones, snapshots, the image cache."""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import subprocess
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver import exception as cd_exception
from compute_driver.disk_image import qcow2, qemu_img
from compute_driver.objects import ImageSpec
from storage_backends import dir as dir_backend
from storage_backends import exception
from storage_backends import files as files_mod
from storage_backends.dir import DirStorageBackend

GiB = 1024**3
MiB = 1024**2


def _info(path: Any) -> dict:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "--force-share", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def _qemu_io(path: Any, command: str, fmt: str = "qcow2") -> str:
    done = subprocess.run(
        ["qemu-io", "-f", fmt, "-c", command, str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0 and "failed" not in done.stdout, done.stdout + done.stderr
    return done.stdout


def _conf(tmp_path: Path, **options: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.StrOpt("state_path", default=str(tmp_path)))
    # NOTE: a new OptGroup, not dir_backend.GROUP: oslo.config keeps overrides
    # in the group object, so they would leak into other tests.
    conf.register_group(cfg.OptGroup("dir"))
    conf.register_opts(dir_backend.OPTS, group="dir")
    conf([], project="compute-driver", default_config_files=[])
    for name, value in options.items():
        conf.set_override(name, value, group="dir")
    return conf


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., DirStorageBackend]:
    def make(**options: Any) -> DirStorageBackend:
        return DirStorageBackend(_conf(tmp_path, **options))

    return make


@pytest.fixture
def backend(make) -> DirStorageBackend:
    return make()


def _image(path: Path, fmt: str, *create_options: str) -> ImageSpec:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", fmt, *create_options, str(path), "64M"], check=True
    )
    return ImageSpec(
        uuid=str(uuidlib.uuid4()),
        name="img",
        disk_format=fmt,
        path=str(path),
        virtual_size=64 * MiB,
    )


@pytest.fixture
def image(tmp_path: Path) -> ImageSpec:
    spec = _image(tmp_path / "image.qcow2", "qcow2")
    _qemu_io(spec.path, "write -P 0x5a 0 64k")
    return spec


@pytest.fixture
def held() -> Iterator[Callable[[str], None]]:
    """Hold an image open for writing, as a running guest does (qemu-io waits on stdin)."""
    procs: list[subprocess.Popen] = []

    def hold(path: str) -> None:
        proc = subprocess.Popen(
            ["qemu-io", "-f", "qcow2", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        assert proc.stdout is not None
        os.read(proc.stdout.fileno(), 100)  # the prompt: the image is open and locked

    yield hold
    for proc in procs:
        proc.communicate(b"quit\n", timeout=10)


# --- options ----------------------------------------------------------------


def test_options_and_describe(backend):
    (group, opts) = next(iter(dir_backend.list_opts().items()))
    assert group.name == "dir" == DirStorageBackend.name
    assert [o.name for o in opts] == [
        "path",
        "image_cache_path",
        "volume_format",
        "preallocation",
        "image_cache_min_age",
    ]
    assert all(o.help for o in opts)
    assert backend.describe().to_wire() == {
        "export": True,
        "name": "dir",
        "shared": False,
        "formats": ["qcow2", "raw"],
        "linked_clone": True,
        "snapshots": True,
        "resize": True,
        "image_cache": True,
    }


def test_metadata_preallocation_of_raw_is_refused(make):
    with pytest.raises(cd_exception.InvalidConfig, match="preallocation metadata"):
        make(volume_format="raw", preallocation="metadata")


@pytest.mark.parametrize("name", ["../x", "a/b", "x\0", "<a>", "a'b", "", ".hidden", "a.qcow2"])
def test_unsafe_names_are_refused(backend, image, name):
    for call in (
        lambda: backend.create_volume(name, 1),
        lambda: backend.create_from_image(name, image, 1),
        lambda: backend.get_volume(name),
        lambda: backend.delete_volume(name),
        lambda: backend.resize_volume(name, 2),
    ):
        with pytest.raises(exception.InvalidVolumeName):
            call()
    backend.create_volume("v", 1)
    with pytest.raises(exception.InvalidVolumeName):
        backend.create_snapshot("v", name)


# --- linked clones and full copies -----------------------------------------


def test_linked_clone_backs_onto_the_cached_image(backend, image) -> None:
    volume = backend.create_from_image("v1", image, 1)
    info = _info(volume.location)
    assert info["backing-filename"] == backend.cached_image(image)
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == GiB
    assert (volume.size_gb, volume.format) == (1, "qcow2")
    _qemu_io(volume.location, "read -P 0x5a 0 64k")


@pytest.fixture
def qemu_img_calls(monkeypatch) -> list[tuple[str, ...]]:
    """Every qemu-img run (still run for real)."""
    calls: list[tuple[str, ...]] = []
    real = qemu_img.run

    def recording(*args: str, timeout: float = qemu_img.TIMEOUT) -> str:
        calls.append(args)
        return real(*args, timeout=timeout)

    monkeypatch.setattr(qemu_img, "run", recording)
    return calls


def test_linked_clone_is_written_in_process_as_qemu_img_writes_it(
    backend, image, qemu_img_calls, tmp_path
) -> None:
    volume = backend.create_from_image("v1", image, 1)
    assert [c[0] for c in qemu_img_calls if c[0] == "create"] == []
    theirs = tmp_path / "theirs.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]
        + [backend.cached_image(image), str(theirs), str(GiB)],
        check=True,
    )
    assert Path(volume.location).read_bytes() == theirs.read_bytes()
    # Tenant data: readable by the services only (issue 12).
    assert os.stat(volume.location).st_mode & 0o777 == 0o600
    subprocess.run(["qemu-img", "check", "-q", volume.location], check=True)


def test_uncommon_linked_clone_is_made_by_qemu_img(backend, image, qemu_img_calls) -> None:
    odd = ImageSpec(**{**image.__dict__, "virtual_size": GiB + 1})
    volume = backend.create_from_image("v1", odd, 1)
    assert [c[0] for c in qemu_img_calls].count("create") == 1
    assert _info(volume.location)["virtual-size"] == GiB + 512


def test_file_stores_elsewhere_make_overlays_with_qemu_img(backend, image, qemu_img_calls):
    # NOTE: the default, as the nfs backend builds its store: a write on a
    # dead mount has no timeout in-process.
    store = dir_backend.FileStore("dir", backend.files, backend.opts)
    volume = store.create_from_image("v1", image, 1)
    assert [c[0] for c in qemu_img_calls].count("create") == 1
    assert _info(volume.location)["backing-filename"] == backend.cached_image(image)


@pytest.mark.parametrize(
    ("code", "error"), [(errno.ENOSPC, exception.NoSpace), (errno.EIO, cd_exception.StorageError)]
)
def test_overlay_write_failure_is_typed_and_leaves_nothing(
    backend, image, monkeypatch, code, error
):
    def failing(path: str, size: int, backing: str, fmt: str) -> None:
        Path(path).write_bytes(b"QFI")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(qcow2, "write_overlay", failing)
    with pytest.raises(error, match=os.strerror(code)):
        backend.create_from_image("v1", image, 1)
    assert os.listdir(backend.opts.path) == []


def test_full_copy_stands_alone_and_is_resized(backend, image) -> None:
    volume = backend.create_from_image("v2", image, 1, linked=False)
    info = _info(volume.location)
    assert "backing-filename" not in info and info["virtual-size"] == GiB
    _qemu_io(volume.location, "read -P 0x5a 0 64k")


def test_full_copy_in_raw(make, image) -> None:
    volume = make(volume_format="raw").create_from_image("v2", image, 1, linked=False)
    assert volume.format == "raw" and volume.location.endswith("v2.raw")
    assert os.path.getsize(volume.location) == GiB
    _qemu_io(volume.location, "read -P 0x5a 0 64k", fmt="raw")


def test_create_from_image_is_idempotent_and_never_smaller_than_the_image(backend, image):
    first = backend.create_from_image("v1", image, 0)
    assert first.size_gb == 1 and _info(first.location)["virtual-size"] == 64 * MiB
    assert backend.create_from_image("v1", image, 5) == first


def test_export_flattens_the_chain(backend, image, tmp_path) -> None:
    backend.create_from_image("v3", image, 1)
    dest = tmp_path / "export.qcow2"
    backend.export_volume("v3", str(dest))
    info = _info(dest)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert backend.describe().export is True


# --- empty volumes ---------------------------------------------------------


def test_qcow2_volume_is_thin(backend):
    volume = backend.create_volume("data", 2)
    info = _info(volume.location)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 2 * GiB)
    assert info["actual-size"] < MiB
    assert volume == backend.get_volume("data")
    assert backend.create_volume("data", 5) == volume  # idempotent


def test_qcow2_volume_preallocated(make):
    volume = make(preallocation="falloc").create_volume("data", 1)
    assert os.stat(volume.location).st_blocks * 512 >= GiB
    assert _info(volume.location)["format"] == "qcow2"


def test_raw_volume_sparse_and_preallocated(make, tmp_path):
    sparse = make(volume_format="raw").create_volume("sparse", 1)
    assert sparse.format == "raw" and sparse.location.endswith("sparse.raw")
    assert os.path.getsize(sparse.location) == GiB
    assert os.stat(sparse.location).st_blocks * 512 < MiB
    full = make(volume_format="raw", preallocation="falloc").create_volume("full", 1)
    assert os.stat(full.location).st_blocks * 512 >= GiB


def test_volume_of_zero_gib_is_refused(backend):
    with pytest.raises(exception.InvalidVolumeSize):
        backend.create_volume("v", 0)


def test_get_missing_volume(backend):
    with pytest.raises(exception.BackendVolumeNotFound):
        backend.get_volume("nope")


def test_a_volume_that_does_not_fit_is_refused_and_leaves_nothing(make, monkeypatch):
    backend = make(preallocation="full")
    monkeypatch.setattr(backend.files, "space", lambda: (10 * GiB, GiB // 2))
    with pytest.raises(exception.NoSpace):
        backend.create_volume("big", 1)
    assert os.listdir(backend.opts.path) == []


def test_qemu_img_out_of_space_is_no_space_and_leaves_nothing(backend, monkeypatch):
    def full(*args: str, timeout: float = 0) -> str:
        raise cd_exception.StorageError(
            operation="qemu-img " + args[0], volume=args[-1], reason="No space left on device"
        )

    monkeypatch.setattr(qemu_img, "run", full)
    with pytest.raises(exception.NoSpace):
        backend.create_volume("v", 1)
    assert os.listdir(backend.opts.path) == []


def test_delete_is_idempotent_and_removes_a_half_made_volume(backend):
    volume = backend.create_volume("v", 1)
    Path(volume.location + ".part").write_bytes(b"")
    backend.delete_volume("v")
    backend.delete_volume("v")
    assert os.listdir(backend.opts.path) == []


def test_delete_of_a_volume_in_use_is_refused(backend, held):
    volume = backend.create_volume("v", 1)
    held(volume.location)
    with pytest.raises(exception.VolumeBusy):
        backend.delete_volume("v")
    assert os.path.exists(volume.location)


# --- resize -------------------------------------------------------------------


def test_resize_grows_and_refuses_to_shrink(backend, image):
    backend.create_from_image("v", image, 1)
    grown = backend.resize_volume("v", 3)
    assert grown.size_gb == 3 and _info(grown.location)["virtual-size"] == 3 * GiB
    assert backend.resize_volume("v", 3) == grown
    with pytest.raises(exception.InvalidVolumeSize, match="shrinking"):
        backend.resize_volume("v", 2)
    with pytest.raises(exception.BackendVolumeNotFound):
        backend.resize_volume("nope", 2)


def test_resize_of_raw_preallocates(make):
    backend = make(volume_format="raw", preallocation="falloc")
    backend.create_volume("v", 1)
    grown = backend.resize_volume("v", 2)
    assert os.path.getsize(grown.location) == 2 * GiB
    assert os.stat(grown.location).st_blocks * 512 >= 2 * GiB


def test_resize_of_a_volume_in_use_is_busy(backend, held):
    volume = backend.create_volume("v", 1)
    held(volume.location)
    with pytest.raises(exception.VolumeBusy):
        backend.resize_volume("v", 2)


# --- snapshots ----------------------------------------------------------------


def test_snapshot_list_revert_and_delete(backend, image):
    volume = backend.create_from_image("v", image, 1)
    before = time.time()
    backend.create_snapshot("v", "s1")
    with pytest.raises(cd_exception.DuplicateName):
        backend.create_snapshot("v", "s1")
    _qemu_io(volume.location, "write -P 0x11 0 64k")
    backend.resize_volume("v", 2)
    backend.create_snapshot("v", "s2")

    snaps = backend.list_snapshots("v")
    assert [(s["name"], s["size_gb"]) for s in snaps] == [("s1", 1), ("s2", 2)]
    created = datetime.datetime.fromisoformat(snaps[0]["created_at"])
    assert created.utcoffset() == datetime.timedelta(0)
    assert abs(created.timestamp() - before) < 5

    backend.revert_to_snapshot("v", "s1")
    _qemu_io(volume.location, "read -P 0x5a 0 64k")
    assert backend.get_volume("v").size_gb == 1  # the size comes back too
    with pytest.raises(exception.VolumeSnapshotNotFound):
        backend.revert_to_snapshot("v", "nope")

    backend.delete_snapshot("v", "s1")
    backend.delete_snapshot("v", "s1")
    backend.delete_snapshot("gone", "s1")
    assert [s["name"] for s in backend.list_snapshots("v")] == ["s2"]


def test_snapshots_of_a_volume_in_use_are_busy(backend, held):
    volume = backend.create_volume("v", 1)
    backend.create_snapshot("v", "s1")
    held(volume.location)
    assert [s["name"] for s in backend.list_snapshots("v")] == ["s1"]  # reads are fine
    for call in (
        lambda: backend.create_snapshot("v", "s2"),
        lambda: backend.revert_to_snapshot("v", "s1"),
        lambda: backend.delete_snapshot("v", "s1"),
    ):
        with pytest.raises(exception.VolumeBusy, match="guest"):
            call()


def test_snapshots_of_raw_volumes_are_unsupported(make):
    backend = make(volume_format="raw")
    backend.create_volume("v", 1)
    with pytest.raises(exception.Unsupported):
        backend.create_snapshot("v", "s1")
    with pytest.raises(exception.BackendVolumeNotFound):
        backend.list_snapshots("nope")


# --- capacity -----------------------------------------------------------------


def test_capacity_counts_what_volumes_and_cached_images_promise(backend, image):
    empty = backend.capacity()
    assert empty.total > 0 and 0 < empty.free <= empty.total and empty.provisioned == 0
    backend.create_volume("a", 2)
    backend.create_from_image("b", image, 3)
    # A virt-driver snapshot overlay is not a volume of its own.
    Path(backend.opts.path, "b.snap-x.qcow2").write_bytes(b"")
    assert backend.capacity().provisioned == 5 * GiB + 64 * MiB


# --- the image cache ----------------------------------------------------------


def test_import_converts_a_vmdk_into_the_cache(backend, tmp_path, image):
    vmdk = tmp_path / "image.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "vmdk", image.path, str(vmdk)],
        check=True,
    )
    spec = ImageSpec(
        uuid=str(uuidlib.uuid4()), name="v", disk_format="vmdk", path=str(vmdk), virtual_size=0
    )
    backend.import_image(spec)
    cached = backend.cached_image(spec)
    assert cached.endswith(spec.uuid + ".qcow2") and _info(cached)["format"] == "qcow2"
    assert os.stat(cached).st_mode & 0o777 == 0o644
    volume = backend.create_from_image("v", spec, 1)
    _qemu_io(volume.location, "read -P 0x5a 0 64k")
    assert not [n for n in os.listdir(backend.opts.image_cache_path) if n.startswith(".")]


@pytest.mark.parametrize(
    ("fmt", "options", "match"),
    [
        ("vmdk", ["-o", "subformat=twoGbMaxExtentSparse"], "other files"),
        ("qcow2", ["-b", "/etc/hostname", "-F", "raw"], "backing"),
    ],
)
def test_images_that_name_other_files_are_refused(backend, tmp_path, fmt, options, match):
    spec = _image(tmp_path / ("bad." + fmt), fmt, *options)
    with pytest.raises(cd_exception.InvalidImage, match=match):
        backend.create_from_image("v", spec, 1)
    assert os.listdir(backend.opts.image_cache_path) == []
    assert os.listdir(backend.opts.path) == []


def test_unknown_format_and_missing_image(backend, image):
    with pytest.raises(cd_exception.InvalidImage):
        backend.import_image(ImageSpec(uuid="x", name="x", disk_format="iso", path=image.path))
    with pytest.raises(cd_exception.StorageError, match="not in the image store"):
        backend.import_image(ImageSpec(uuid="y", name="y", disk_format="raw", path="/nope"))


def test_cleanup_keeps_every_base_a_disk_backs_onto(backend, image, tmp_path):
    used = image
    unused = _image(tmp_path / "unused.qcow2", "qcow2")
    chained = _image(tmp_path / "chained.qcow2", "qcow2")
    backend.create_from_image("v1", used, 1)
    backend.create_from_image("v2", chained, 1)
    backend.import_image(unused)
    # The virt driver's external snapshot: v2's file becomes the backing file
    # of an overlay, and still backs onto the cached image.
    v2 = backend.get_volume("v2").location
    overlay = os.path.join(backend.opts.path, "v2.snap-s.qcow2")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", v2, overlay], check=True
    )
    cache = backend.opts.image_cache_path
    stale = Path(cache, ".caching-%s-1234" % unused.uuid)
    stale.write_bytes(b"")

    assert backend.cleanup_image_cache() == []  # all younger than image_cache_min_age
    removed = backend.cleanup_image_cache(min_age=0)
    assert sorted(removed) == sorted([unused.uuid + ".qcow2", stale.name])
    assert sorted(os.listdir(cache)) == sorted([used.uuid + ".qcow2", chained.uuid + ".qcow2"])

    backend.delete_volume("v1")
    assert backend.cleanup_image_cache(min_age=0) == [used.uuid + ".qcow2"]


def test_cleanup_removes_nothing_when_a_volume_cannot_be_read(backend, image, monkeypatch):
    backend.import_image(image)
    backend.create_volume("v", 1)
    real_read = backend.files.read

    def read(area: str, name: str, offset: int, length: int) -> bytes:
        if name == "v.qcow2":
            raise PermissionError(13, "Permission denied")
        return real_read(area, name, offset, length)

    monkeypatch.setattr(backend.files, "read", read)
    assert backend.cleanup_image_cache(min_age=0) == []
    assert os.listdir(backend.opts.image_cache_path) == [image.uuid + ".qcow2"]


def test_capacity_scans_read_only_the_headers_that_changed(tmp_path, monkeypatch):
    files = dir_backend.LocalFiles(str(tmp_path / "v"), str(tmp_path / "i"), cache_headers=True)
    files.check("test")
    path = tmp_path / "v" / "a.qcow2"
    qcow2.write_overlay(str(path), 1024**2, "/base.qcow2", "qcow2")
    reads: list[str] = []
    real_read = files.read

    def read(area: str, name: str, offset: int, length: int) -> bytes:
        reads.append(name)
        return real_read(area, name, offset, length)

    monkeypatch.setattr(files, "read", read)
    first = files.scan_reusing_headers("volumes")
    per_header = len(reads)
    assert per_header and set(reads) == {"a.qcow2"}
    assert files.scan_reusing_headers("volumes") == first
    assert len(reads) == per_header
    assert files.stat("volumes", "a.qcow2") == first[0]  # stat always reads
    assert len(reads) == 2 * per_header

    # A rewrite (a resize) is read again, not taken from memory.
    qcow2.write_overlay(str(path), 2 * 1024**2, "/base.qcow2", "qcow2")
    (again,) = files.scan_reusing_headers("volumes")
    assert again.header is not None and again.header.virtual_size == 2 * 1024**2

    path.unlink()
    assert files.scan_reusing_headers("volumes") == [] and files._headers == {}


def _qemu_img_says_busy(path: str) -> bool:
    done = subprocess.run(["qemu-img", "info", path], capture_output=True, text=True)
    return done.returncode != 0 and "lock" in done.stderr


@pytest.mark.parametrize("offset", [*range(100, 106), *range(200, 206)])
def test_in_process_lock_test_agrees_with_qemu_img(tmp_path, offset):
    path = str(tmp_path / "v.qcow2")
    qcow2.write_overlay(path, MiB, "/base.qcow2", "qcow2")
    assert not files_mod.qemu_lock_held(path) and not _qemu_img_says_busy(path)
    holder = os.open(path, os.O_RDWR)  # another open file description, as another process
    try:
        flock = files_mod._FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, offset, 1, 0)
        fcntl.fcntl(holder, fcntl.F_OFD_SETLK, flock)
        assert files_mod.qemu_lock_held(path) == _qemu_img_says_busy(path)
    finally:
        os.close(holder)


@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "reader"])
def test_in_process_lock_test_agrees_with_qemu_img_on_qemu_holders(backend, held, read_only):
    volume = backend.create_volume("v", 1)
    if read_only:
        proc = subprocess.Popen(
            ["qemu-io", "-r", "-f", "qcow2", volume.location],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        os.read(proc.stdout.fileno(), 100)
    else:
        held(volume.location)
    try:
        busy = _qemu_img_says_busy(volume.location)
        assert busy == (not read_only)
        assert files_mod.qemu_lock_held(volume.location) == busy
    finally:
        if read_only:
            proc.communicate(b"quit\n", timeout=10)
