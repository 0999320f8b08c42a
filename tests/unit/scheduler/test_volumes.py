"""The scheduler's volume records and methods on real SQLite.

The agent is a stand-in that fails on demand: only to reach the error paths
(the working paths run against real agents in tests/functional/test_volumes.py).
"""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import oslo_messaging as messaging
import pytest
from oslo_config import cfg

from compute_driver import exception
from compute_driver.rpc import schemas
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.store import Store
from compute_driver.scheduler.volume_store import VolumeStore
from compute_driver.scheduler.volumes import VolumeManager, agent_volume
from storage_backends import exception as storage_exception

ADMIN = RequestContext(admin=True)
HOST = "compute-1"


class FailingAgent:
    """Answers volume calls like an agent; ``fail`` makes the next call raise."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.calls: list[tuple[str, tuple]] = []

    def _answer(self, method: str, *args: Any) -> Any:
        self.calls.append((method, args))
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        return None

    def create_volume(self, host: str, volume: dict, image: dict | None = None) -> dict:
        self._answer("create_volume", host, volume)
        return dict(volume, format="qcow2", location="/v/%s" % volume["id"], shared=False)

    def delete_volume(self, host: str, volume: dict) -> None:
        self._answer("delete_volume", host, volume)

    def attach_volume(self, host: str, uuid: str, volume: dict) -> dict:
        self._answer("attach_volume", host, uuid, volume)
        return {"target_dev": "vdb"}

    def detach_volume(self, host: str, uuid: str, volume: dict) -> None:
        self._answer("detach_volume", host, uuid, volume)

    def resize_volume(self, host: str, volume: dict, size_gb: int, uuid: str | None = None) -> dict:
        self._answer("resize_volume", host, volume, size_gb)
        return dict(volume, size_gb=size_gb)

    def volume_snapshot(self, host: str, volume: dict, action: str, name: str | None = None) -> Any:
        return self._answer("volume_snapshot", host, volume, action, name)


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    store = Store(Database("sqlite:///%s" % (tmp_path / "s.sqlite")))
    store.db.upgrade()
    store.report_host(
        HOST,
        {"vcpus": 8, "memory_mb": 8192, "disk_gb": 100},
        {"virt_type": "qemu", "storage_backends": ["dir", "rbd"]},
    )
    yield store
    store.db.engine.dispose()


@pytest.fixture
def agent() -> FailingAgent:
    return FailingAgent()


@pytest.fixture
def manager(store: Store, agent: FailingAgent, fresh_conf: cfg.ConfigOpts) -> VolumeManager:
    return VolumeManager(fresh_conf, store, Catalog(store.db), agent)  # type: ignore[arg-type]


def call(manager: VolumeManager, method: str, **payload: Any) -> Any:
    """Call an endpoint method as the RPC server does; raise the typed error it carries."""
    try:
        return getattr(manager, method)({"admin": True}, **payload)
    except messaging.ExpectedException as wrapped:
        raise wrapped.__cause__ from None  # type: ignore[misc]


def _server(store: Store, project: str = "demo", host: str | None = HOST) -> dict:
    uuid = str(uuidlib.uuid4())
    store.create_instance(
        uuid=uuid,
        name="web",
        project=project,
        flavor_name="m1.nano",
        vcpus=1,
        memory_mb=128,
        root_gb=1,
        image_uuid=str(uuidlib.uuid4()),
    )
    store.update_instance(uuid, host=host, vm_state="active", task_state=None)
    return store.get_instance(uuid)


def _volume(manager: VolumeManager, name: str = "data", project: str = "demo") -> dict:
    return call(
        manager,
        "create_volume",
        uuid=str(uuidlib.uuid4()),
        name=name,
        size_gb=1,
        backend="dir",
        project=project,
    )


def test_create_records_what_the_backend_made_and_repeats_are_no_ops(
    manager: VolumeManager, agent: FailingAgent
) -> None:
    uuid = str(uuidlib.uuid4())
    made = call(
        manager, "create_volume", uuid=uuid, name="data", size_gb=1, backend="dir", project="demo"
    )
    assert (made["status"], made["location"], made["host"]) == ("available", "/v/" + uuid, HOST)
    again = call(
        manager, "create_volume", uuid=uuid, name="data", size_gb=1, backend="dir", project="demo"
    )
    assert again == made and len(agent.calls) == 1
    with pytest.raises(exception.DuplicateName):
        call(
            manager,
            "create_volume",
            uuid=str(uuidlib.uuid4()),
            name="data",
            size_gb=1,
            backend="dir",
            project="demo",
        )


def test_create_on_a_backend_no_host_offers_stores_nothing(manager: VolumeManager) -> None:
    with pytest.raises(exception.NoValidHost, match="storage backend nfs"):
        call(
            manager,
            "create_volume",
            uuid=str(uuidlib.uuid4()),
            name="data",
            size_gb=1,
            backend="nfs",
            project="demo",
        )
    assert manager.volumes.list_volumes() == []


def test_a_failed_create_ends_in_error_and_can_be_deleted(
    manager: VolumeManager, agent: FailingAgent
) -> None:
    agent.fail = storage_exception.NoSpace(backend="dir", volume="v", needed="1G", free="0")
    uuid = str(uuidlib.uuid4())
    with pytest.raises(storage_exception.NoSpace):
        call(
            manager,
            "create_volume",
            uuid=uuid,
            name="data",
            size_gb=1,
            backend="dir",
            project="demo",
        )
    failed = call(manager, "show_volume", volume=uuid)
    assert failed["status"] == "error" and "no room" in failed["fault"]
    call(manager, "delete_volume", volume=uuid)
    with pytest.raises(exception.VolumeNotFound):
        call(manager, "show_volume", volume=uuid)


def test_attach_is_refused_across_projects_and_hosts(
    manager: VolumeManager, store: Store, agent: FailingAgent
) -> None:
    volume = _volume(manager)
    with pytest.raises(exception.ProjectMismatch):
        call(
            manager,
            "attach_volume",
            server=_server(store, project="other")["uuid"],
            volume=volume["uuid"],
        )
    store.report_host("compute-2", {"vcpus": 8, "memory_mb": 8192, "disk_gb": 100}, {})
    with pytest.raises(exception.Conflict, match="local storage of host compute-1"):
        call(
            manager,
            "attach_volume",
            server=_server(store, host="compute-2")["uuid"],
            volume=volume["uuid"],
        )
    assert call(manager, "show_volume", volume=volume["uuid"])["status"] == "available"
    assert [c[0] for c in agent.calls] == ["create_volume"]


def test_a_failed_attach_leaves_the_volume_available(
    manager: VolumeManager, store: Store, agent: FailingAgent
) -> None:
    volume, server = _volume(manager), _server(store)
    agent.fail = exception.VirtError(operation="attach", instance=server["uuid"], reason="no")
    with pytest.raises(exception.VirtError):
        call(manager, "attach_volume", server=server["uuid"], volume=volume["uuid"])
    after = call(manager, "show_volume", volume=volume["uuid"])
    assert (after["status"], after["attached_to"]) == ("available", None)
    assert "attach failed" in after["fault"]


def test_a_detach_the_guest_refuses_keeps_the_volume_attached(
    manager: VolumeManager, store: Store, agent: FailingAgent
) -> None:
    volume, server = _volume(manager), _server(store)
    call(manager, "attach_volume", server=server["uuid"], volume=volume["uuid"])
    agent.fail = exception.DeviceDetachFailed(
        device="volume " + volume["uuid"], instance=server["uuid"], reason="no answer within 30 s"
    )
    with pytest.raises(exception.DeviceDetachFailed):
        call(manager, "detach_volume", server=server["uuid"], volume=volume["uuid"])
    after = call(manager, "show_volume", volume=volume["uuid"])
    assert (after["status"], after["attached_to"]) == ("in-use", server["uuid"])
    with pytest.raises(exception.VolumeStateConflict):
        call(manager, "delete_volume", volume=volume["uuid"])
    call(manager, "detach_volume", server=server["uuid"], volume=volume["uuid"])
    assert call(manager, "show_volume", volume=volume["uuid"])["status"] == "available"


def test_detach_from_the_wrong_server_and_shrink_are_refused(
    manager: VolumeManager, store: Store
) -> None:
    volume, server = _volume(manager), _server(store)
    with pytest.raises(exception.VolumeNotAttached):
        call(manager, "detach_volume", server=server["uuid"], volume=volume["uuid"])
    grown = call(manager, "resize_volume", volume=volume["uuid"], size_gb=3)
    assert (grown["size_gb"], grown["status"]) == (3, "available")
    with pytest.raises(storage_exception.InvalidVolumeSize):
        call(manager, "resize_volume", volume=volume["uuid"], size_gb=2)


def test_revert_needs_the_volume_detached(manager: VolumeManager, store: Store) -> None:
    volume, server = _volume(manager), _server(store)
    call(manager, "volume_snapshot", volume=volume["uuid"], action="create", name="s1")
    call(manager, "attach_volume", server=server["uuid"], volume=volume["uuid"])
    with pytest.raises(exception.VolumeStateConflict, match="available"):
        call(manager, "volume_snapshot", volume=volume["uuid"], action="revert", name="s1")
    assert call(manager, "show_volume", volume=volume["uuid"])["status"] == "in-use"


def test_a_deleted_server_frees_its_volumes(manager: VolumeManager, store: Store) -> None:
    volume, server = _volume(manager), _server(store)
    call(manager, "attach_volume", server=server["uuid"], volume=volume["uuid"])
    store.begin_delete(server["uuid"])
    store.finish_delete(server["uuid"], HOST)
    after = call(manager, "show_volume", volume=volume["uuid"])
    assert (after["status"], after["attached_to"], after["target_dev"]) == (
        "available",
        None,
        None,
    )


def test_only_one_of_many_concurrent_attaches_wins(manager: VolumeManager, store: Store) -> None:
    volume = _volume(manager)
    servers = [_server(store) for _ in range(6)]
    won, lost = [], []

    def attach(server: dict) -> None:
        try:
            call(manager, "attach_volume", server=server["uuid"], volume=volume["uuid"])
            won.append(server["uuid"])
        except exception.VolumeStateConflict:
            lost.append(server["uuid"])

    threads = [threading.Thread(target=attach, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 5
    assert call(manager, "show_volume", volume=volume["uuid"])["attached_to"] == won[0]


def test_agent_volume_carries_only_what_the_agent_needs(manager: VolumeManager) -> None:
    record = _volume(manager)
    assert agent_volume(record) == {
        "id": record["uuid"],
        "backend": "dir",
        "size_gb": 1,
        "location": record["location"],
        "format": "qcow2",
    }
    assert VolumeStore(manager.store.db).attached("nobody") == []


def test_a_repeated_create_may_boot_from_the_volume_it_already_holds(
    manager: VolumeManager,
) -> None:
    volume = _volume(manager)
    server = str(uuidlib.uuid4())
    manager.claim_boot_volume(manager.bootable(volume["uuid"], "demo", server, ADMIN), server)
    assert manager.bootable(volume["uuid"], "demo", server, ADMIN)["attached_to"] == server
    with pytest.raises(exception.VolumeStateConflict):
        manager.bootable(volume["uuid"], "demo", str(uuidlib.uuid4()), ADMIN)
    with pytest.raises(exception.ProjectMismatch):
        manager.bootable(volume["uuid"], "other", server, ADMIN)


def test_a_volume_beyond_the_limit_is_refused(manager: VolumeManager, store: Store) -> None:
    server = _server(store)
    for i in range(schemas.MAX_VOLUMES):
        call(
            manager,
            "attach_volume",
            server=server["uuid"],
            volume=_volume(manager, "d%d" % i)["uuid"],
        )
    extra = _volume(manager, "extra")
    with pytest.raises(exception.VolumeLimitReached, match="already has 24 volumes"):
        call(manager, "attach_volume", server=server["uuid"], volume=extra["uuid"])
    assert call(manager, "show_volume", volume=extra["uuid"])["status"] == "available"
