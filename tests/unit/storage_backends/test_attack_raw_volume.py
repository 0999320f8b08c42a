"""A raw volume is raw whatever its guest wrote into it (the attack branch).

A guest owns every byte of a raw volume, its first ones included: it can
write a qcow2 header whose backing file is a host file (backing format raw,
so nothing needs probing). The dir backend read the format of a volume from
its content (``files.read_header``), and ``export_volume`` (``image create
--server``) ran ``qemu-img convert`` without ``-f``: qemu-img took the raw
volume for that qcow2 and flattened the host file into the new image, which
the scheduler's probe accepts (a plain qcow2) and the tenant boots
(CVE-2015-5162's class; issue 12 item 2 on the way out).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from storage_backends.dir import DirStorageBackend
from tests.unit.storage_backends.test_dir import _conf

SECRET = b"root:HOSTSECRET:19000:0:99999:7:::\n" * 64


def _hostile_header(volume: str, host_file: Path) -> None:
    """Write over the start of ``volume`` what a guest can write to its /dev/vda."""
    header = Path(volume + ".hdr")
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            str(host_file),
            "-F",
            "raw",
            str(header),
            "1M",
        ],
        check=True,
    )
    data = header.read_bytes()
    with open(volume, "r+b") as f:
        f.write(data)
    header.unlink()


def test_a_raw_volume_with_a_qcow2_header_stays_raw(tmp_path: Path) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_bytes(SECRET)
    backend = DirStorageBackend(_conf(tmp_path, volume_format="raw"))
    volume = backend.create_volume("rootdisk", 1)
    assert volume.format == "raw"
    _hostile_header(volume.location, host_file)

    assert backend.get_volume("rootdisk").format == "raw"
    dest = tmp_path / "export.qcow2"
    backend.export_volume("rootdisk", str(dest))
    flat = tmp_path / "export.raw"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(dest), str(flat)], check=True
    )
    assert b"HOSTSECRET" not in flat.read_bytes()[: 1024 * 1024], "a host file was exported"
