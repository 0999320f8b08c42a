"""Volumes through the bus on every backend (dir, nfs, iscsi, rbd), with real guests.

One cloud for the module (``storage_cloud.py``): real Ceph, nfs-ganesha and
tgtd, and a scheduler and an agent offering all four backends. Two TCG
guests run for the whole module, each with the watcher of
``tests/functional/test_volumes.py``: for every virtio disk that appears (or
changes size) it prints ``CD-GUEST disk vdX sectors=N marker=[M]`` and, when
the marker is ``FROM``, writes ``TO`` over it. The writer turns an empty
disk into ``alpha``, the reader turns ``alpha`` into ``beta``.

Per backend: a volume moves from the writer to the reader with its data;
a snapshot taken before the reader wrote brings ``alpha`` back; a resize
shows in the running guest; a volume made from the image is a linked clone
(checked with qemu-img and the rbd bindings, not with our own code) and a
server boots from it; so is the root disk of ``server create --root-backend``.
iSCSI LUNs cannot be snapshotted, grown or cloned: those calls are refused
with ``storage_unsupported`` and change nothing, and a boot volume or root
disk there is a full copy. Last, the CHAP password and the
cephx key are looked for, during attaches, everywhere an operator or
another user could see them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import libvirt
import pytest
import rbd
from cloud_env import GUEST_DIR, LIBVIRT_URI, Cloud, ensure_test_guest, wait_for_console
from test_volumes import WATCHER, GiB_SECTORS

from tests.functional.storage.ceph_cluster import CephCluster
from tests.functional.storage.storage_cloud import BACKENDS, StorageCloud, running_storage_cloud

#: What each backend's describe() promises; the tests hold the cloud to it.
CAN = {
    "dir": {"snapshots": True, "resize": True, "linked_clone": True},
    "nfs": {"snapshots": True, "resize": True, "linked_clone": True},
    "iscsi": {"snapshots": False, "resize": False, "linked_clone": False},
    "rbd": {"snapshots": True, "resize": True, "linked_clone": True},
}
#: Fields of a volume record that a refused call may touch (it records why).
BOOKKEEPING = ("fault", "updated_at")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(ceph: CephCluster) -> Iterator[StorageCloud]:
    with running_storage_cloud(ceph) as storage_cloud:
        yield storage_cloud


@pytest.fixture(scope="module")
def guests(env: StorageCloud) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The writer (empty disk -> ``alpha``) and the reader (``alpha`` -> ``beta``)."""
    cloud, image = env.cloud, env.image["uuid"]
    writer = cloud.create_server("st-writer", image, user_data=_watcher("", "alpha"))
    reader = cloud.create_server("st-reader", image, user_data=_watcher("alpha", "beta"))
    for server in (writer, reader):
        wait_for_console(cloud, server["uuid"], "CD-GUEST ready")
    yield writer, reader
    for server in (writer, reader):
        cloud.ctl("server", "delete", server["uuid"], "--wait")


@pytest.fixture(scope="module")
def ceph_admin(env: StorageCloud) -> Iterator[Any]:
    client = env.ceph.admin()
    yield client
    client.shutdown()


def _watcher(from_marker: str, to_marker: str) -> bytes:
    return (WATCHER % {"from": from_marker, "to": to_marker}).encode()


def _console(cloud: Cloud, server: str) -> str:
    return str(cloud.ok("server", "console-log", server, "--lines", "5000"))


@contextlib.contextmanager
def _expect(cloud: Cloud, server: str, *markers: str, timeout: float = 90) -> Iterator[None]:
    """Require each marker once more in ``server``'s console after the block than before."""
    before = _console(cloud, server)
    counts = {marker: before.count(marker) for marker in markers}
    yield
    deadline = time.monotonic() + timeout
    text = before
    while not all(text.count(m) > counts[m] for m in markers):
        if time.monotonic() > deadline:
            missing = [m for m in markers if text.count(m) <= counts[m]]
            raise AssertionError(
                "%r not (again) in %s's console within %d s:\n%s"
                % (missing, server, timeout, text[-3000:])
            )
        time.sleep(0.5)
        text = _console(cloud, server)


def _settled(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in BOOKKEEPING}


def _refused(cloud: Cloud, *args: str) -> str:
    """Run computectl ``args``; require exit 2 with code ``storage_unsupported``."""
    result = cloud.ctl(*args)
    assert result.rc == 2, (args, result)
    assert "storage_unsupported" in result.stderr and "iscsi" in result.stderr, result.stderr
    return result.stderr


def _release(cloud: Cloud, volume: dict[str, Any] | None, *servers: dict[str, Any]) -> None:
    """Detach (if attached) and delete ``volume``, whatever state a failure left."""
    if volume is None:
        return
    for server in servers:
        cloud.ctl("volume", "detach", server["uuid"], volume["uuid"])
    cloud.ctl("volume", "delete", volume["uuid"])


def _lun_file(env: StorageCloud, location: str) -> str:
    target, _, number = location.rpartition("/")
    assert target == env.target.iqn, location
    return env.target.luns[int(number)]


# --- the flow ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_volume_moves_between_guests_with_snapshot_and_resize(
    env: StorageCloud, guests: tuple[dict[str, Any], dict[str, Any]], backend: str
) -> None:
    cloud, can = env.cloud, CAN[backend]
    writer, reader = (g["uuid"] for g in guests)
    volume = None
    sizes_after_revert = (0, 0)
    try:
        volume = cloud.ok(
            "volume",
            "create",
            "flow-" + backend,
            "--size",
            "1",
            "--backend",
            backend,
            "--project",
            "ft",
        )
        assert (volume["status"], volume["size_gb"], volume["backend"]) == (
            "available",
            1,
            backend,
        )
        uuid = volume["uuid"]

        # The writer finds an empty disk and writes "alpha" on it.
        with _expect(
            cloud,
            writer,
            "CD-GUEST disk vdb sectors=%d marker=[]" % GiB_SECTORS,
            "CD-GUEST wrote vdb alpha",
        ):
            attached = cloud.ok("volume", "attach", writer, uuid)
        assert (attached["status"], attached["target_dev"]) == ("in-use", "vdb")
        with _expect(cloud, writer, "CD-GUEST disk-gone vdb"):
            detached = cloud.ok("volume", "detach", writer, uuid)
        assert (detached["status"], detached["attached_to"]) == ("available", None)

        # A snapshot holds "alpha" (iscsi: refused, and nothing changes).
        before = cloud.ok("volume", "show", uuid)
        if can["snapshots"]:
            cloud.ok("volume", "snapshot", "create", uuid, "s1")
            snaps = cloud.ok("volume", "snapshot", "list", uuid)
            assert [s["name"] for s in snaps] == ["s1"]
        else:
            _refused(cloud, "volume", "snapshot", "create", uuid, "s1")
            _refused(cloud, "volume", "snapshot", "list", uuid)
        assert _settled(cloud.ok("volume", "show", uuid)) == _settled(before)

        # The reader reads "alpha" on the same volume and writes "beta".
        with _expect(
            cloud,
            reader,
            "CD-GUEST disk vdb sectors=%d marker=[alpha]" % GiB_SECTORS,
            "CD-GUEST wrote vdb beta",
        ):
            cloud.ok("volume", "attach", reader, uuid)

        # Grown while attached: the running guest sees the new size.
        if can["resize"]:
            with _expect(
                cloud, reader, "CD-GUEST disk vdb sectors=%d marker=[beta]" % (2 * GiB_SECTORS)
            ):
                grown = cloud.ok("volume", "resize", uuid, "--size", "2")
            assert (grown["size_gb"], grown["status"]) == (2, "in-use")
        else:
            before = cloud.ok("volume", "show", uuid)
            lun = _lun_file(env, before["location"])
            lun_size = os.path.getsize(lun)
            seen = _console(cloud, reader).count("CD-GUEST disk vdb")
            _refused(cloud, "volume", "resize", uuid, "--size", "2")
            after = cloud.ok("volume", "show", uuid)
            assert _settled(after) == _settled(before)
            assert (after["status"], after["size_gb"]) == ("in-use", 1)
            assert os.path.getsize(lun) == lun_size
            time.sleep(2)  # the watcher polls every 0.3 s: a size change would show
            assert _console(cloud, reader).count("CD-GUEST disk vdb") == seen

        with _expect(cloud, reader, "CD-GUEST disk-gone vdb"):
            cloud.ok("volume", "detach", reader, uuid)

        # Revert: "alpha" is back for the next reader.
        if can["snapshots"]:
            cloud.ok("volume", "snapshot", "revert", uuid, "s1")
            reverted = cloud.ok("volume", "show", uuid)
            with _expect(cloud, reader, "marker=[alpha]", "CD-GUEST wrote vdb beta"):
                cloud.ok("volume", "attach", reader, uuid)
            lines = re.findall(
                r"CD-GUEST disk vdb sectors=(\d+) marker=\[alpha\]", _console(cloud, reader)
            )
            sizes_after_revert = (int(lines[-1]) // GiB_SECTORS, reverted["size_gb"])
            with _expect(cloud, reader, "CD-GUEST disk-gone vdb"):
                cloud.ok("volume", "detach", reader, uuid)
            cloud.ok("volume", "snapshot", "delete", uuid, "s1")
            assert cloud.ok("volume", "snapshot", "list", uuid) == []
        else:
            before = cloud.ok("volume", "show", uuid)
            _refused(cloud, "volume", "snapshot", "revert", uuid, "s1")
            _refused(cloud, "volume", "snapshot", "delete", uuid, "s1")
            assert _settled(cloud.ok("volume", "show", uuid)) == _settled(before)

        cloud.ok("volume", "delete", uuid)
        assert cloud.ctl("volume", "show", uuid).rc == 3
        volume = None
    finally:
        _release(cloud, volume, *guests)
    if can["snapshots"]:
        # NOTE: checked last, so a mismatch does not hide the rest of the flow.
        guest_gb, record_gb = sizes_after_revert
        assert guest_gb == record_gb, (
            "after the revert the guest sees %d GiB, volume show says %d GiB"
            % (guest_gb, record_gb)
        )


# --- boot from a volume made from the image ---------------------------------------


def _qemu_img_info(location: str) -> dict[str, Any]:
    done = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", location],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout))


def _assert_linked_clone(
    env: StorageCloud, ceph_admin: Any, volume: dict[str, Any], unused: bool = True
) -> None:
    """A copy-on-write child of the image, as the storage's own tools see it.

    :param unused: no guest has used it yet, so it holds no data of its own.
    """
    backend, location, image = volume["backend"], volume["location"], env.image["uuid"]
    if backend in ("dir", "nfs"):
        if backend == "nfs":
            assert location == env.nfs.url("volumes/%s.qcow2" % volume["uuid"]), location
        info = _qemu_img_info(location)
        assert info["format"] == "qcow2" and info.get("backing-filename"), info
        assert image in info["backing-filename"], info
        if unused:
            assert info["actual-size"] < 1024**2, info  # the data stays in the backing file
    else:
        pool, _, name = location.partition("/")
        with ceph_admin.open_ioctx(pool) as ioctx, rbd.Image(ioctx, name, read_only=True) as img:
            parent = img.get_parent_image_spec()
            assert (parent["pool_name"], parent["image_name"], parent["snap_name"]) == (
                "rbd",
                "image-" + image,
                "base",
            )
            if unused:
                prefix = img.block_name_prefix()
                # A clone, not a copy: not one data object of its own yet.
                assert not [o for o in ioctx.list_objects() if o.key.startswith(prefix)]


def _assert_full_copy(env: StorageCloud, volume: dict[str, Any]) -> None:
    """The LUN holds the image's bytes (and zeros after them): a full copy."""
    lun = _lun_file(env, volume["location"])
    image_path = os.path.join(GUEST_DIR, ensure_test_guest()["disk"])
    done = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", image_path, lun],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_boots_from_a_volume_made_from_the_image(
    env: StorageCloud, ceph_admin: Any, backend: str
) -> None:
    cloud = env.cloud
    volume = cloud.ok(
        "volume",
        "create",
        "boot-" + backend,
        "--size",
        "1",
        "--backend",
        backend,
        "--project",
        "ft",
        "--image",
        env.image["uuid"],
    )
    server = None
    try:
        assert (volume["status"], volume["backend"]) == ("available", backend)
        if CAN[backend]["linked_clone"]:
            _assert_linked_clone(env, ceph_admin, volume)
        else:
            _assert_full_copy(env, volume)
        server = cloud.create_server(
            "boot-" + backend, env.image["uuid"], "--boot-volume", volume["uuid"]
        )
        # The guest mounted the image's ext4 file system from the volume.
        wait_for_console(cloud, server["uuid"], "CD-GUEST data dev=/dev/vda")
        booted = cloud.ok("volume", "show", volume["uuid"])
        assert (booted["status"], booted["boot"], booted["target_dev"]) == ("in-use", True, "vda")
        conn = libvirt.open(LIBVIRT_URI)
        try:
            xml = conn.lookupByUUIDString(server["uuid"]).XMLDesc(0)
        finally:
            conn.close()
        if backend != "dir":
            assert "protocol='%s'" % backend in xml or 'protocol="%s"' % backend in xml, xml
        cloud.ok("server", "delete", server["uuid"], "--wait")
        server = None
        kept = cloud.ok("volume", "show", volume["uuid"])
        assert (kept["status"], kept["boot"], kept["attached_to"]) == ("available", False, None)
        cloud.ok("volume", "delete", volume["uuid"])
        volume = None
    finally:
        if server is not None:
            cloud.ctl("server", "delete", server["uuid"], "--wait")
        if volume is not None:
            cloud.ctl("volume", "delete", volume["uuid"])


def _root_disk(server: str) -> dict[str, Any]:
    """Backend, id and location of a server's root disk (vda), read from its domain XML."""
    conn = libvirt.open(LIBVIRT_URI)
    try:
        root = ElementTree.fromstring(conn.lookupByUUIDString(server).XMLDesc(0))
    finally:
        conn.close()
    disk = next(d for d in root.iter("disk") if d.find("target").get("dev") == "vda")
    source = disk.find("source")
    if disk.get("type") == "file":
        return {"backend": "dir", "location": source.get("file"), "uuid": server + "_root"}
    protocol, name = source.get("protocol"), source.get("name")
    if protocol == "nfs":
        host = source.find("host").get("name")
        location = "nfs://%s%s" % (host, name)
        return {"backend": "nfs", "location": location, "uuid": server + "_root"}
    return {"backend": protocol, "location": name, "uuid": server + "_root"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_root_disk_on_each_backend(env: StorageCloud, ceph_admin: Any, backend: str) -> None:
    """``server create --root-backend B``: the root disk is made from the image on B."""
    cloud = env.cloud
    server = cloud.create_server("root-" + backend, env.image["uuid"], "--root-backend", backend)
    try:
        assert server["vm_state"] == "active", server
        disk = _root_disk(server["uuid"])
        assert disk["backend"] == backend, disk
        if CAN[backend]["linked_clone"]:
            # NOTE: the guest is booting: it may have written to its disk already.
            _assert_linked_clone(env, ceph_admin, disk, unused=False)
        else:
            _assert_full_copy(env, disk)
    finally:
        cloud.ok("server", "delete", server["uuid"], "--wait")
    # The root disk went with its server.
    if backend == "rbd":
        with ceph_admin.open_ioctx("rbd") as ioctx:
            assert disk["location"].partition("/")[2] not in rbd.RBD().list(ioctx)
    elif backend == "iscsi":
        with open(_lun_file(env, disk["location"]), "rb") as f:
            assert not f.read(1024**2).strip(b"\0")  # wiped for the next owner
    elif backend == "dir":
        assert not os.path.exists(disk["location"])
    else:
        assert (
            subprocess.run(
                ["qemu-img", "info", "-U", disk["location"]], capture_output=True, timeout=60
            ).returncode
            != 0
        )


# --- secrets ----------------------------------------------------------------------


class _ProcessWatch:
    """Snapshots of every process's arguments (``ps -eo args``), and the
    environment of QEMU processes, taken in a loop until stopped."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ps-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True)
            self.seen.append(done.stdout)
            for pid in filter(str.isdigit, os.listdir("/proc")):
                with contextlib.suppress(OSError):
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        if b"qemu" not in f.read():
                            continue
                    with open("/proc/%s/environ" % pid, "rb") as f:
                        self.seen.append(f.read().decode(errors="replace"))
            time.sleep(0.05)

    def __enter__(self) -> _ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()


def _domain_xmls() -> list[str]:
    flags = (0, libvirt.VIR_DOMAIN_XML_INACTIVE, libvirt.VIR_DOMAIN_XML_SECURE)
    conn = libvirt.open(LIBVIRT_URI)
    try:
        xmls = []
        for dom in conn.listAllDomains():
            for flag in flags:
                with contextlib.suppress(libvirt.libvirtError):  # a domain going away
                    xmls.append(dom.XMLDesc(flag))
        return xmls
    finally:
        conn.close()


def test_chap_password_and_cephx_key_are_never_shown(
    env: StorageCloud, guests: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    cloud = env.cloud
    writer = guests[0]["uuid"]
    texts: dict[str, list[str]] = {"domain xml": [], "rpc": []}
    with _ProcessWatch() as watch:
        for backend in ("iscsi", "rbd"):
            volume = cloud.ok(
                "volume",
                "create",
                "secret-" + backend,
                "--size",
                "1",
                "--backend",
                backend,
                "--project",
                "ft",
            )
            try:
                with _expect(cloud, writer, "CD-GUEST wrote vdb alpha"):
                    attached = cloud.ok("volume", "attach", writer, volume["uuid"])
                texts["domain xml"] += _domain_xmls()
                assert any(attached["uuid"] in xml for xml in texts["domain xml"])
                for args in (
                    ("volume", "show", volume["uuid"]),
                    ("volume", "list"),
                    ("server", "show", writer),
                ):
                    result = cloud.ctl(*args)
                    assert result.rc == 0, result
                    texts["rpc"].append(result.stdout + result.stderr)
                with _expect(cloud, writer, "CD-GUEST disk-gone vdb"):
                    cloud.ok("volume", "detach", writer, volume["uuid"])
                cloud.ok("volume", "delete", volume["uuid"])
            finally:
                _release(cloud, volume, guests[0])
    texts["ps"] = watch.seen
    logs = {}
    for service in ("compute-scheduler", "compute-agent"):
        with open(cloud.log_path(service), errors="replace") as f:
            logs[service] = f.read()
    texts["logs"] = list(logs.values())
    with open(os.path.join(cloud.state, "scheduler.sqlite"), "rb") as f:
        texts["database"] = [f.read().decode(errors="replace")]

    # The places looked at did see the attaches (the search is not vacuous).
    assert any("qemu-system" in snapshot for snapshot in watch.seen)
    assert "attached to" in logs["compute-scheduler"]
    assert "secret-iscsi" in texts["rpc"][0] or "secret-iscsi" in texts["rpc"][1]
    assert any("protocol='iscsi'" in x or 'protocol="iscsi"' in x for x in texts["domain xml"])
    assert any("protocol='rbd'" in x or 'protocol="rbd"' in x for x in texts["domain xml"])
    for what, secret in env.secrets.items():
        for where, found in texts.items():
            leaks = [t for t in found if secret in t]
            assert not leaks, "the %s secret is in the %s" % (what, where)
