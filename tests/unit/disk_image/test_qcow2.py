"""In-process qcow2 overlays: byte for byte what qemu-img writes, and valid to qemu-img."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from compute_driver.disk_image import qcow2

pytestmark = pytest.mark.usefixtures("qemu_img")

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


def _qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True).stdout


def _info(path: Path) -> dict:
    info = json.loads(_qemu_img("info", "--output=json", "-U", str(path)))
    for key in ("filename", "actual-size"):
        info.pop(key, None)
    return dict(info)


@pytest.fixture
def backings(tmp_path: Path) -> dict[str, Path]:
    """A qcow2 and a raw backing file, and a qcow2 one under a long, non-ASCII path."""
    qcow = tmp_path / "base.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", str(qcow), "16M")
    raw = tmp_path / "base.raw"
    raw.write_bytes(b"\0" * MiB)
    deep = tmp_path.joinpath(*["d" * 200] * 3, "bäse ü.qcow2")
    deep.parent.mkdir(parents=True)
    shutil.copyfile(qcow, deep)
    return {"qcow2": qcow, "raw": raw, "deep": deep}


@pytest.mark.parametrize(
    "size", [512, 64 * KiB, 16 * MiB, GiB, 10 * GiB + 512, TiB, 4 * TiB], ids=str
)
@pytest.mark.parametrize("which", ["qcow2", "raw", "deep"])
def test_overlay_is_what_qemu_img_create_writes(tmp_path, backings, size, which):
    backing = backings[which]
    fmt = "raw" if which == "raw" else "qcow2"
    theirs, ours = tmp_path / "theirs.qcow2", tmp_path / "ours.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(backing), str(theirs), str(size))
    assert qcow2.fits(size, str(backing), fmt)

    qcow2.write_overlay(str(ours), size, str(backing), fmt)

    assert ours.read_bytes() == theirs.read_bytes()
    _qemu_img("check", "-q", str(ours))
    info = _info(ours)
    assert info == _info(theirs)
    assert (info["virtual-size"], info["backing-filename"]) == (size, str(backing))
    assert info["backing-filename-format"] == fmt
    assert info["format-specific"]["data"]["compat"] == "1.1"


def test_overlay_reads_through_to_its_backing_file(tmp_path, backings):
    backing = backings["qcow2"]
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", str(backing)],
        check=True,
        capture_output=True,
    )
    ours = tmp_path / "ours.qcow2"
    qcow2.write_overlay(str(ours), GiB, str(backing), "qcow2")
    read = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 0 64k", "-c", "write 1M 64k", str(ours)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "failed" not in read.stdout, read.stdout
    _qemu_img("check", "-q", str(ours))


def test_write_overlay_replaces_what_was_there(tmp_path, backings):
    path = tmp_path / "v.qcow2"
    path.write_bytes(b"x" * (4 * MiB))
    qcow2.write_overlay(str(path), GiB, str(backings["qcow2"]), "qcow2")
    assert path.stat().st_size == 3 * 64 * KiB + 2 * 8
    _qemu_img("check", "-q", str(path))


@pytest.mark.parametrize(
    ("size", "backing", "fmt"),
    [
        (0, "/images/base.qcow2", "qcow2"),  # empty
        (GiB + 1, "/images/base.qcow2", "qcow2"),  # not whole sectors
        (4 * TiB + 512, "/images/base.qcow2", "qcow2"),  # L1 table beyond one cluster
        (GiB, "base.qcow2", "qcow2"),  # relative: qemu-img resolves it
        (GiB, "/" + "b" * 1023, "qcow2"),  # longer than qemu-img allows
        (GiB, "/images/base\0.qcow2", "qcow2"),
        (GiB, "/images/base.vmdk", "vmdk"),
    ],
)
def test_uncommon_overlays_are_left_to_qemu_img(tmp_path, size, backing, fmt):
    assert not qcow2.fits(size, backing, fmt)
    with pytest.raises(ValueError, match="use qemu-img"):
        qcow2.write_overlay(str(tmp_path / "v.qcow2"), size, backing, fmt)
    assert not (tmp_path / "v.qcow2").exists()


def _qemu_chain(top: Path) -> list[str]:
    info = json.loads(_qemu_img("info", "-U", "--backing-chain", "--output=json", str(top)))
    return [layer["filename"] for layer in (info if isinstance(info, list) else [info])]


@pytest.fixture
def chains(tmp_path: Path) -> dict[str, Path]:
    """Tops of qcow2 chains: absolute and relative backing names, and one on a raw file."""
    sub = tmp_path / "sub"
    sub.mkdir()
    _qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "base.qcow2"), "1M")
    mid = tmp_path / "mid.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2", str(mid))
    absolute, relative = sub / "abs.qcow2", sub / "rel.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(mid), str(absolute))
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "../mid.qcow2", str(relative))
    (tmp_path / "base.raw").write_bytes(b"\0" * MiB)
    on_raw = tmp_path / "on-raw.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", "base.raw", str(on_raw))
    our_overlay = sub / "ours.qcow2"
    qcow2.write_overlay(str(our_overlay), MiB, str(mid), "qcow2")
    return {
        "base": tmp_path / "base.qcow2",
        "absolute": absolute,
        "relative": relative,
        "ours": our_overlay,
        "on-raw": on_raw,
        "raw": tmp_path / "base.raw",
    }


@pytest.mark.parametrize("which", ["base", "absolute", "relative", "ours"])
def test_backing_chain_is_what_qemu_img_reports(chains, which):
    assert qcow2.backing_chain(str(chains[which])) == _qemu_chain(chains[which])


@pytest.mark.parametrize("which", ["on-raw", "raw"])
def test_backing_chain_leaves_other_formats_to_qemu_img(chains, which):
    assert qcow2.backing_chain(str(chains[which])) is None


def test_backing_chain_leaves_missing_and_protocol_backings_to_qemu_img(tmp_path, chains):
    gone = tmp_path / "gone.qcow2"
    qcow2.write_overlay(str(gone), MiB, str(tmp_path / "missing.qcow2"), "qcow2")
    assert qcow2.backing_chain(str(gone)) is None
    remote = tmp_path / "remote.qcow2"
    remote.write_bytes(
        qcow2.overlay(MiB, str(chains["base"]), "qcow2").replace(
            str(chains["base"]).encode(), b"nbd:x:1" + b"/" * (len(str(chains["base"])) - 7)
        )
    )
    assert qcow2.backing_chain(str(remote)) is None
    assert qcow2.backing_chain(str(tmp_path / "nothing.qcow2")) is None
