"""Fixtures of the storage backend tests: a real Ceph cluster, an image store.

They need no compute-driver service; the Ceph daemons are started here and
killed at the end of the session (see ``ceph_cluster.py``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.storage.ceph_cluster import CephCluster, running_ceph

CEPH_PROGRAMS = ("ceph-mon", "ceph-osd", "monmaptool")


@pytest.fixture(scope="session")
def ceph() -> Iterator[CephCluster]:
    """A one-mon, one-OSD cluster with pools ``rbd`` and ``other`` and a client
    limited to ``rbd``, for the whole session."""
    missing = [p for p in CEPH_PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.fail(
            "%s not installed: apt-get install --no-install-recommends ceph-mon ceph-osd "
            "ceph-common (tools/install-deps.sh)" % ", ".join(missing)
        )
    with running_ceph() as cluster:
        yield cluster


#: Where the test image holds known bytes: (offset, pattern byte, length).
IMAGE_PATTERNS = ((0, 0x5A, 65536), (40 * 1024**2, 0xA5, 4096))
IMAGE_VIRTUAL_SIZE = 64 * 1024**2


@pytest.fixture(scope="session")
def qcow2_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 MiB qcow2 image with :data:`IMAGE_PATTERNS` written by qemu-io."""
    path = tmp_path_factory.mktemp("image-store") / "test.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(IMAGE_VIRTUAL_SIZE)],
        check=True,
    )
    for offset, byte, length in IMAGE_PATTERNS:
        subprocess.run(
            [
                "qemu-io",
                "-f",
                "qcow2",
                "-c",
                "write -P 0x%x %d %d" % (byte, offset, length),
                str(path),
            ],
            check=True,
            capture_output=True,
        )
    return path
