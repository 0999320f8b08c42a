"""ComputeManager error paths over the real libvirt test driver and the real dir backend.

Only the scheduler is a stand-in (it records the casts the agent sends);
libvirt is ``test:///default`` in this process, volumes are qcow2 files
made by qemu-img in tmp_path.
"""

from __future__ import annotations

import datetime
import logging
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from oslo_config import cfg

from compute_driver.agent.host import AgentHost
from compute_driver.agent.manager import ComputeManager, root_volume_id
from compute_driver.objects import ImageSpec
from compute_driver.virt.libvirt.driver import LibvirtDriver, domain_name
from network_plugins.noop import NoopNetworkPlugin
from storage_backends.dir import DirStorageBackend

HOST = "unit-host"
CTXT = {"request_id": "req-unit"}

pytestmark = pytest.mark.usefixtures("qemu_img")


class RecordingScheduler:
    """Stands in for SchedulerAPI: records every cast the agent sends."""

    def __init__(self) -> None:
        self.casts: list[tuple[str, dict[str, Any]]] = []

    def instance_update(
        self,
        host: str,
        uuid: str,
        vm_state: str,
        power_state: str | None = None,
        fault: str | None = None,
    ) -> None:
        self.casts.append(
            (
                "instance_update",
                {
                    "host": host,
                    "uuid": uuid,
                    "vm_state": vm_state,
                    "power_state": power_state,
                    "fault": fault,
                },
            )
        )

    def instance_deleted(self, host: str, uuid: str) -> None:
        self.casts.append(("instance_deleted", {"host": host, "uuid": uuid}))


@pytest.fixture
def agent_conf(fresh_conf: cfg.ConfigOpts, tmp_path: Path) -> cfg.ConfigOpts:
    fresh_conf([], project="compute-driver", default_config_files=[])
    fresh_conf.set_override("host", HOST)
    fresh_conf.set_override("state_path", str(tmp_path / "state"))
    fresh_conf.set_override("uri", "test:///default", group="libvirt")
    fresh_conf.set_override("instances_path", str(tmp_path / "instances"), group="libvirt")
    return fresh_conf


@pytest.fixture
def driver(agent_conf: cfg.ConfigOpts) -> Iterator[LibvirtDriver]:
    driver = LibvirtDriver(agent_conf)
    driver.init_host(HOST)
    yield driver
    driver.host.close()


@pytest.fixture
def backend(agent_conf: cfg.ConfigOpts) -> DirStorageBackend:
    return DirStorageBackend(agent_conf)


@pytest.fixture
def scheduler() -> RecordingScheduler:
    return RecordingScheduler()


@pytest.fixture
def manager(agent_conf, driver, backend, scheduler) -> ComputeManager:
    return ComputeManager(
        AgentHost(
            agent_conf, driver, {"dir": backend}, {"noop": NoopNetworkPlugin(agent_conf)}, scheduler
        )
    )


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    # NOTE: in the image store ([image] store_path = $state_path/images), under
    # its UUID: the agent derives the path, a message never names it.
    path = tmp_path / "state" / "images" / str(uuidlib.uuid4()) / "disk.raw"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        f.truncate(1024 * 1024)
    return path


def _image_uuid(image_path: Path) -> str:
    """The image UUID of a file in the store (a fresh one for a missing image)."""
    try:
        return str(uuidlib.UUID(image_path.parent.name))
    except ValueError:
        return str(uuidlib.uuid4())


def _instance(image_path: Path | str, uuid: str | None = None) -> dict[str, Any]:
    return {
        "uuid": uuid or str(uuidlib.uuid4()),
        "name": "web-1",
        "project": "demo",
        "flavor": {"name": "m1.nano", "vcpus": 1, "memory_mb": 128, "root_gb": 1},
        "image": {
            "uuid": _image_uuid(Path(image_path)),
            "name": "tiny",
            "disk_format": "raw",
            "virtual_size": 1024 * 1024,
            "cmdline": None,
        },
        "user_data": "aGVsbG8K",
        "created_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _domains_of(driver: LibvirtDriver, uuid: str) -> list[libvirt.virDomain]:
    conn = driver.host.get_connection()
    return [
        d for d in conn.listAllDomains() if d.UUIDString() == uuid or d.name() == domain_name(uuid)
    ]


def _volume_files(backend: DirStorageBackend) -> list[str]:
    return sorted(p.name for p in Path(backend.opts.path).iterdir())


def test_storage_error_ends_in_error_cast_and_leaves_nothing(
    manager, driver, backend, scheduler, tmp_path
):
    instance = _instance(tmp_path / "images" / "missing.raw")
    manager.build_instance(CTXT, instance=instance)

    assert len(scheduler.casts) == 1
    method, cast = scheduler.casts[0]
    assert method == "instance_update"
    assert (cast["host"], cast["uuid"], cast["vm_state"]) == (HOST, instance["uuid"], "error")
    assert "cache image" in cast["fault"] and "not in the image store" in cast["fault"]
    assert _domains_of(driver, instance["uuid"]) == []
    assert _volume_files(backend) == []
    assert not Path(driver.instance_dir(instance["uuid"])).exists()


def test_spawn_error_removes_the_root_volume(manager, driver, backend, scheduler, image_file):
    instance = _instance(image_file)
    # A foreign domain holds the name ours would get: libvirt refuses to define ours.
    conn = driver.host.get_connection()
    squatter = conn.defineXML(
        "<domain type='test'><name>%s</name><memory>65536</memory><vcpu>1</vcpu>"
        "<os><type>hvm</type></os></domain>" % domain_name(instance["uuid"])
    )
    try:
        manager.build_instance(CTXT, instance=instance)
        method, cast = scheduler.casts[-1]
        assert (method, cast["vm_state"]) == ("instance_update", "error")
        assert "spawn" in cast["fault"]
        assert _volume_files(backend) == []
        assert not Path(driver.instance_dir(instance["uuid"])).exists()
        assert [d.UUIDString() for d in _domains_of(driver, instance["uuid"])] == [
            squatter.UUIDString()
        ]
    finally:
        squatter.undefine()


def test_build_refused_for_image_properties_is_one_line_without_traceback(
    manager, driver, backend, scheduler, image_file, caplog
):
    """Issue 12 item 9: a tenant's bad property is the caller's mistake, not ours."""
    instance = _instance(image_file)
    instance["image"]["properties"] = {"hw_disk_bus": "floppy"}
    with caplog.at_level(logging.INFO):
        manager.build_instance(CTXT, instance=instance)
    method, cast = scheduler.casts[-1]
    assert (method, cast["vm_state"]) == ("instance_update", "error")
    assert "hw_disk_bus" in cast["fault"]
    assert _domains_of(driver, instance["uuid"]) == []
    assert _volume_files(backend) == []
    assert [r for r in caplog.records if r.exc_info] == []
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refusals) == 1
    line = refusals[0].getMessage()
    assert "req-unit" in line and "hw_disk_bus" in line and "\n" not in line


def test_build_then_repeated_build_defines_one_domain(
    manager, driver, backend, scheduler, image_file
):
    instance = _instance(image_file)
    manager.build_instance(CTXT, instance=instance)
    manager.build_instance(CTXT, instance=instance)
    try:
        assert [(m, c["vm_state"], c["power_state"]) for m, c in scheduler.casts] == [
            ("instance_update", "active", "running"),
            ("instance_update", "active", "running"),
        ]
        domains = _domains_of(driver, instance["uuid"])
        assert len(domains) == 1
        assert domains[0].isActive()
        assert _volume_files(backend) == [root_volume_id(instance["uuid"]) + ".qcow2"]
        assert [i.uuid for i in driver.list_instances()].count(instance["uuid"]) == 1
    finally:
        manager.delete_instance(CTXT, uuid=instance["uuid"])
    assert _domains_of(driver, instance["uuid"]) == []
    assert _volume_files(backend) == []
    assert scheduler.casts[-1] == ("instance_deleted", {"host": HOST, "uuid": instance["uuid"]})


def test_delete_of_unknown_uuid_casts_deleted(manager, scheduler):
    uuid = str(uuidlib.uuid4())
    assert manager.delete_instance(CTXT, uuid=uuid) is None
    assert manager.delete_instance(CTXT, uuid=uuid) is None
    assert scheduler.casts == [("instance_deleted", {"host": HOST, "uuid": uuid})] * 2


def test_delete_after_failed_build_removes_leftover_root_volume(
    manager, backend, scheduler, image_file
):
    uuid = str(uuidlib.uuid4())
    # A root volume left by a build that died before it defined the domain.
    backend.create_from_image(root_volume_id(uuid), _spec_image(image_file), 1)
    assert _volume_files(backend) == [root_volume_id(uuid) + ".qcow2"]
    manager.delete_instance(CTXT, uuid=uuid)
    assert _volume_files(backend) == []
    assert scheduler.casts == [("instance_deleted", {"host": HOST, "uuid": uuid})]


def _spec_image(image_file: Path) -> ImageSpec:
    return ImageSpec(
        uuid=str(uuidlib.uuid4()),
        name="tiny",
        disk_format="raw",
        path=str(image_file),
        virtual_size=1024 * 1024,
    )


class ReconcilingScheduler(RecordingScheduler):
    """Also answers host_instances with what the scheduler believes."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        super().__init__()
        self.records = records

    def host_instances(self, host: str) -> list[dict[str, Any]]:
        return self.records

    def host_networks(self, host: str) -> list[dict[str, Any]]:
        return []


def _built(manager: ComputeManager, image_file: Path) -> str:
    payload = _instance(image_file)
    manager.build_instance(CTXT, instance=payload)
    return payload["uuid"]


def test_reconcile_reports_a_server_whose_domain_is_missing(agent_conf, driver, backend) -> None:
    missing = str(uuidlib.uuid4())
    scheduler = ReconcilingScheduler([{"uuid": missing, "task_state": None, "vm_state": "active"}])
    manager = ComputeManager(AgentHost(agent_conf, driver, {"dir": backend}, {}, scheduler))
    manager.reconcile()
    assert scheduler.casts == [
        (
            "instance_update",
            {
                "host": HOST,
                "uuid": missing,
                "vm_state": "error",
                "power_state": None,
                "fault": "its domain is missing on %s" % HOST,
            },
        )
    ]


def test_reconcile_is_quiet_about_servers_that_are_where_expected(
    agent_conf, driver, backend, image_file
) -> None:
    builder = ComputeManager(
        AgentHost(agent_conf, driver, {"dir": backend}, {}, RecordingScheduler())
    )
    uuid = _built(builder, image_file)
    scheduler = ReconcilingScheduler([{"uuid": uuid, "task_state": None, "vm_state": "active"}])
    ComputeManager(AgentHost(agent_conf, driver, {"dir": backend}, {}, scheduler)).reconcile()
    assert scheduler.casts == []
    driver.destroy(uuid)


@pytest.mark.parametrize("policy, power_state", [("log", "running"), ("stop", "shutdown")])
def test_unknown_domains_follow_the_policy(
    agent_conf, driver, backend, image_file, policy, power_state
) -> None:
    agent_conf.set_override("unknown_domain_policy", policy, group="agent")
    agent_conf.set_override("shutdown_timeout", 1, group="libvirt")
    builder = ComputeManager(
        AgentHost(agent_conf, driver, {"dir": backend}, {}, RecordingScheduler())
    )
    uuid = _built(builder, image_file)
    ComputeManager(
        AgentHost(agent_conf, driver, {"dir": backend}, {}, ReconcilingScheduler([]))
    ).reconcile()
    assert driver.get_info(uuid).power_state == power_state
    driver.destroy(uuid)


def test_reap_policy_removes_the_domain_and_its_disk(agent_conf, driver, backend, image_file):
    agent_conf.set_override("unknown_domain_policy", "reap", group="agent")
    builder = ComputeManager(
        AgentHost(agent_conf, driver, {"dir": backend}, {}, RecordingScheduler())
    )
    uuid = _built(builder, image_file)
    ComputeManager(
        AgentHost(agent_conf, driver, {"dir": backend}, {}, ReconcilingScheduler([]))
    ).reconcile()
    assert uuid not in {i.uuid for i in driver.list_instances()}
    assert not (Path(agent_conf.dir.path) / (root_volume_id(uuid) + ".qcow2")).exists()
