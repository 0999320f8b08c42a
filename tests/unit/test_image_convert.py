"""Foreign disk formats are converted to qcow2 on import, with progress, and leave nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from compute_driver import exception, image_convert


def _vmdk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(path), "8M"], check=True)
    subprocess.run(
        ["qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 1M 64k", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def test_vmdk_is_converted_with_progress_and_the_data_kept(tmp_path: Path) -> None:
    src = _vmdk(tmp_path)
    assert image_convert.needs_conversion(str(src))
    seen: list[float] = []
    out = image_convert.convert_to_qcow2(str(src), seen.append, workdir=str(tmp_path))
    try:
        assert image_convert.disk_format(out) == "qcow2"
        subprocess.run(["qemu-img", "compare", "-q", str(src), out], check=True)
        assert seen and seen[-1] == 100.0
    finally:
        image_convert.remove_converted(out)
    assert not os.path.exists(os.path.dirname(out))


def test_store_formats_are_taken_as_they_are(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 4096)
    assert not image_convert.needs_conversion(str(raw))


def test_a_failed_conversion_leaves_nothing(tmp_path: Path) -> None:
    src = _vmdk(tmp_path)
    src.write_bytes(src.read_bytes()[:1024])  # a truncated vmdk
    before = set(tmp_path.iterdir())
    with pytest.raises(exception.InvalidImage):
        image_convert.convert_to_qcow2(str(src), workdir=str(tmp_path))
    assert set(tmp_path.iterdir()) == before
