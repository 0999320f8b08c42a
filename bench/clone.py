"""Root disk from an image: linked clone against full copy, on ``rbd`` and on ``dir``.

What is timed is ``create_from_image`` of a root disk as large as its image,
the image already imported (rbd: ``image-<uuid>@base`` in the pool; dir: the
cached copy), for two qcow2 images holding the same 64 MiB of data, one of
1 GiB and one of 10 GiB virtual size (mostly sparse):

* rbd clone: the backend as shipped (a COW clone of ``image-<uuid>@base``);
* rbd full copy: the same with ``max_clone_depth = 0`` (clone, then flatten);
* dir clone: ``DirStorageBackend`` (a qcow2 overlay on the cached image);
* dir full copy: ``qemu-img convert -O qcow2`` of the cached image, which is
  what a backend that copies would do.

The one-time costs (rbd import with the qcow2-to-raw conversion, dir image
cache copy) are reported apart. Ceph is a throw-away one-mon one-OSD memstore
cluster on loopback (tests/functional/storage/ceph_cluster.py), so RBD times
are a lower bound: no network, no replication, RAM-backed OSD.

Run as root (the Ceph daemons, qemu-img)::

    .venv/bin/python bench/clone.py [--rounds N] [--smoke]

The last line is one JSON object: ``dir_clone_ms``, ``rbd_clone_ms``,
``dir_size_ratio``, ``rbd_size_ratio``, ``dir_full_copy_ms`` (then
``rbd_full_copy_ms``, ``rbd_import_ms``, ``dir_cache_ms``); times are
medians in ms at 10 GiB, a size ratio is the clone time at 10 GiB over the
clone time at 1 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from oslo_config import cfg  # noqa: E402

from compute_driver.objects import ImageSpec  # noqa: E402
from storage_backends import dir as dir_backend  # noqa: E402
from storage_backends import rbd as rbd_backend  # noqa: E402
from tests.functional.storage.ceph_cluster import running_ceph  # noqa: E402

GiB = 1024**3
MiB = 1024**2
SIZES_GB = (1, 10)
#: (offset, MiB) of the data every image holds, 64 MiB in all, within the first GiB.
DATA = ((0, 32), (256 * MiB, 16), (768 * MiB, 16))


def make_image(directory: str, size_gb: int) -> ImageSpec:
    path = os.path.join(directory, "image-%dg.qcow2" % size_gb)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", path, str(size_gb * GiB)], check=True
    )
    for n, (offset, mib) in enumerate(DATA):
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", "write -P 0x%x %d %dM" % (n + 1, offset, mib), path],
            check=True,
            capture_output=True,
        )
    return ImageSpec(
        uuid=str(uuid.uuid4()),
        name="bench-%dg" % size_gb,
        disk_format="qcow2",
        path=path,
        virtual_size=size_gb * GiB,
    )


@contextlib.contextmanager
def stopwatch(times: list[float]) -> Iterator[None]:
    """Append the milliseconds the block took to ``times``."""
    started = time.perf_counter()
    yield
    times.append((time.perf_counter() - started) * 1000)


def _conf(state: str, group: cfg.OptGroup, opts: list, **options: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.StrOpt("state_path", default=state))
    conf.register_group(cfg.OptGroup(group.name))
    conf.register_opts(opts, group=group.name)
    conf([], project="compute-driver", default_config_files=[])
    for name, value in options.items():
        conf.set_override(name, value, group=group.name)
    return conf


def bench_rbd(work: str, images: dict[int, ImageSpec], rounds: int) -> dict[str, Any]:
    with running_ceph(memstore_bytes=8 * GiB) as ceph:
        print("ceph up in %.2f s" % ceph.start_seconds)
        common = dict(
            ceph_conf=ceph.client_conf,
            user=ceph.client_id,
            keyring=ceph.client_keyring,
            secret_uuid=str(uuid.uuid4()),
            op_timeout=120,
        )
        clone = rbd_backend.RbdStorageBackend(
            _conf(work, rbd_backend.GROUP, rbd_backend.OPTS, **common)
        )
        full = rbd_backend.RbdStorageBackend(
            _conf(work, rbd_backend.GROUP, rbd_backend.OPTS, max_clone_depth=0, **common)
        )
        result: dict[str, Any] = {"import": {}, "clone": {}, "full": {}}
        for size, image in images.items():
            once: list[float] = []
            with stopwatch(once):
                clone.create_from_image("bench-first", image, size)
            clone.delete_volume("bench-first")
            result["import"][size] = once[0]
            for kind, backend in (("clone", clone), ("full", full)):
                times: list[float] = []
                for n in range(rounds):
                    name = "bench-%s-%d-%d" % (kind, size, n)
                    with stopwatch(times):
                        backend.create_from_image(name, image, size)
                    backend.delete_volume(name)
                result[kind][size] = statistics.median(times)
        return result


def bench_dir(work: str, images: dict[int, ImageSpec], rounds: int) -> dict[str, Any]:
    conf = _conf(
        work,
        dir_backend.GROUP,
        dir_backend.OPTS,
        path=os.path.join(work, "volumes"),
        image_cache_path=os.path.join(work, "image-cache"),
    )
    backend = dir_backend.DirStorageBackend(conf)
    result: dict[str, Any] = {"cache": {}, "clone": {}, "full": {}}
    for size, image in images.items():
        once: list[float] = []
        with stopwatch(once):
            cached = backend.cached_image(image)
        result["cache"][size] = once[0]
        clones: list[float] = []
        copies: list[float] = []
        for n in range(rounds):
            name = "bench-clone-%d-%d" % (size, n)
            with stopwatch(clones):
                backend.create_from_image(name, image, size)
            backend.delete_volume(name)
            copy = os.path.join(work, "volumes", "bench-copy-%d-%d.qcow2" % (size, n))
            with stopwatch(copies):
                subprocess.run(
                    ["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", cached, copy], check=True
                )
            os.unlink(copy)
        result["clone"][size] = statistics.median(clones)
        result["full"][size] = statistics.median(copies)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed creations per case")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a test run of a few seconds (options given explicitly still win): --rounds 1",
    )
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(rounds=1)
        args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cd-clone-bench-") as work:
        images = {size: make_image(work, size) for size in SIZES_GB}
        rbd = bench_rbd(work, images, args.rounds)
        dirs = bench_dir(work, images, args.rounds)
    print("median of %d, ms          1 GiB      10 GiB" % args.rounds)
    for label, table, key in (
        ("rbd import (once)", rbd, "import"),
        ("rbd linked clone", rbd, "clone"),
        ("rbd full copy", rbd, "full"),
        ("dir cache copy (once)", dirs, "cache"),
        ("dir linked clone", dirs, "clone"),
        ("dir full copy", dirs, "full"),
    ):
        print("%-22s %10.1f %11.1f" % (label, table[key][1], table[key][10]))
    figures = {
        "dir_clone_ms": round(dirs["clone"][10], 1),
        "rbd_clone_ms": round(rbd["clone"][10], 1),
        "dir_size_ratio": round(dirs["clone"][10] / dirs["clone"][1], 2),
        "rbd_size_ratio": round(rbd["clone"][10] / rbd["clone"][1], 2),
        "dir_full_copy_ms": round(dirs["full"][10], 1),
        "rbd_full_copy_ms": round(rbd["full"][10], 1),
        "rbd_import_ms": round(rbd["import"][10], 1),
        "dir_cache_ms": round(dirs["cache"][10], 1),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
