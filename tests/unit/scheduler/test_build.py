"""The build path on real SQLite: every way a create (or a reschedule) can
fail after ``instance.create.start`` leaves the server ERROR and sends
``instance.create.error`` exactly once; a create refused before anything is
stored sends nothing."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import oslo_messaging as messaging
import pytest
from oslo_config import cfg
from sqlalchemy import exc as sa_exc

from compute_driver import exception
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.service import Scheduler
from compute_driver.scheduler.store import Store

HOST = "h1"
ADMIN = {"admin": True, "project": "demo"}


class RecordingNotifier:
    """Keeps (priority, event_type, uuid) of what the scheduler would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def info(self, event_type: str, record: dict[str, Any], **extra: Any) -> None:
        self.sent.append(("info", event_type, record["uuid"]))

    def error(self, event_type: str, record: dict[str, Any], **extra: Any) -> None:
        self.sent.append(("error", event_type, record["uuid"]))

    def of(self, uuid: str) -> list[str]:
        return [event for _, event, about in self.sent if about == uuid]


class Agent:
    """The compute API: records the builds; ``unreachable`` makes a cast fail."""

    def __init__(self) -> None:
        self.builds: list[tuple[str, dict[str, Any]]] = []
        self.unreachable = False

    def build_instance(self, host: str, payload: dict[str, Any]) -> None:
        if self.unreachable:
            raise messaging.MessageDeliveryFailure("no route to %s" % host)
        self.builds.append((host, payload))

    def create_volume(self, host: str, volume: dict, image: Any) -> dict:
        return {"size_gb": volume["size_gb"], "location": "/v/x", "format": "raw", "shared": False}

    def update_topology(self, host: str, network: dict, remotes: list[str]) -> None:
        pass


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    store = Store(Database("sqlite:///%s" % (tmp_path / "s.sqlite")))
    store.db.upgrade()
    store.report_host(
        HOST,
        {"vcpus": 8, "memory_mb": 8192, "disk_gb": 100},
        {"virt_type": "qemu", "storage_backends": ["dir"], "tunnel_ip": "192.0.2.1"},
    )
    Catalog(store.db).create_flavor("t.one", vcpus=1, memory_mb=256, root_gb=1)
    Catalog(store.db).create_flavor("t.huge", vcpus=1, memory_mb=65536, root_gb=1)
    Catalog(store.db).create_image(
        uuid=str(uuidlib.uuid4()),
        name="img",
        disk_format="raw",
        path="/images/img",
        size_bytes=1,
        virtual_size=1,
        checksum="0" * 64,
    )
    yield store
    store.db.engine.dispose()


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def agent() -> Agent:
    return Agent()


@pytest.fixture
def scheduler(
    store: Store, agent: Agent, notifier: RecordingNotifier, fresh_conf: cfg.ConfigOpts, tmp_path
) -> Scheduler:
    fresh_conf.set_override("store_path", str(tmp_path / "images"), "image")
    fresh_conf.set_override("max_attempts", 2, "scheduler")
    return Scheduler(fresh_conf, store, agent, notifier=notifier)  # type: ignore[arg-type]


def call(endpoint: Any, method: str, **payload: Any) -> Any:
    """Call an endpoint method as the RPC server does; raise the typed error it carries."""
    try:
        return getattr(endpoint, method)(dict(ADMIN), **payload)
    except messaging.ExpectedException as wrapped:
        raise wrapped.__cause__ from None  # type: ignore[misc]


def create(scheduler: Scheduler, uuid: str, **extra: Any) -> dict[str, Any]:
    return call(
        scheduler.servers,
        "create_server",
        uuid=uuid,
        name="web",
        flavor=extra.pop("flavor", "t.one"),
        image="img",
        **extra,
    )


def failed_once(scheduler: Scheduler, notifier: RecordingNotifier, uuid: str) -> dict:
    """The server's record, after checking it is ERROR and was notified as such once."""
    assert notifier.of(uuid) == ["instance.create.start", "instance.create.error"]
    record = scheduler.store.get_instance(uuid)
    assert (record["vm_state"], record["task_state"]) == ("error", None)
    return record


def _network(scheduler: Scheduler, name: str, cidr: str) -> dict[str, Any]:
    return call(
        scheduler.networks,
        "create_network",
        uuid=str(uuidlib.uuid4()),
        name=name,
        type="vxlan",
        cidr=cidr,
    )


def _volume(scheduler: Scheduler, name: str = "boot") -> dict[str, Any]:
    return call(
        scheduler.volumes,
        "create_volume",
        uuid=str(uuidlib.uuid4()),
        name=name,
        size_gb=1,
        backend="dir",
    )


# --- failures after instance.create.start --------------------------------------------


def test_a_full_network_fails_the_create_once(scheduler, notifier) -> None:
    _network(scheduler, "small", "10.9.0.0/29")  # 5 addresses besides the gateway
    uuid = str(uuidlib.uuid4())
    with pytest.raises(exception.NetworkFull):
        create(scheduler, uuid, networks=["small"] * 6)
    assert "no free address" in failed_once(scheduler, notifier, uuid)["fault"]


def test_a_network_gone_after_the_check_fails_the_create_once(
    scheduler, notifier, monkeypatch
) -> None:
    network = _network(scheduler, "net", "10.9.0.0/24")
    checked = scheduler.networks.of_project
    seen: list[str] = []

    def of_project(*args: Any) -> dict[str, Any]:
        # NOTE: a concurrent delete between the check and the allocation.
        record = checked(*args)
        if not seen:
            seen.append(record["uuid"])
            call(scheduler.networks, "delete_network", network=network["uuid"])
        return record

    monkeypatch.setattr(scheduler.networks, "of_project", of_project)
    uuid = str(uuidlib.uuid4())
    with pytest.raises(exception.NetworkNotFound):
        create(scheduler, uuid, networks=["net"])
    failed_once(scheduler, notifier, uuid)


def test_a_boot_volume_taken_after_the_check_fails_the_create_once(
    scheduler, notifier, monkeypatch
) -> None:
    volume = _volume(scheduler)
    checked = scheduler.volumes.bootable

    def bootable(*args: Any) -> dict[str, Any]:
        # NOTE: another create claims it between the check and the claim.
        record = checked(*args)
        scheduler.volumes.claim_boot_volume(record, str(uuidlib.uuid4()))
        return record

    monkeypatch.setattr(scheduler.volumes, "bootable", bootable)
    uuid = str(uuidlib.uuid4())
    with pytest.raises(exception.VolumeStateConflict):
        create(scheduler, uuid, boot_volume=volume["uuid"])
    failed_once(scheduler, notifier, uuid)


def test_a_placement_exception_fails_the_create_once(scheduler, notifier, monkeypatch) -> None:
    def select(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a filter broke")

    monkeypatch.setattr(scheduler.build._placement(), "select", select)
    uuid = str(uuidlib.uuid4())
    with pytest.raises(exception.InternalError):  # the caller hears no more
        create(scheduler, uuid)
    assert failed_once(scheduler, notifier, uuid)["fault"] == "placement failed: a filter broke"


def test_a_store_error_while_claiming_fails_the_create_once(
    scheduler, notifier, monkeypatch
) -> None:
    def claim(*args: Any) -> bool:
        raise sa_exc.OperationalError("UPDATE hosts", {}, Exception("disk I/O error"))

    monkeypatch.setattr(scheduler.store, "claim", claim)
    uuid = str(uuidlib.uuid4())
    with pytest.raises(exception.InternalError):
        create(scheduler, uuid)
    assert "disk I/O error" in failed_once(scheduler, notifier, uuid)["fault"]


def test_no_valid_host_fails_the_create_once(scheduler, notifier) -> None:
    uuid = str(uuidlib.uuid4())
    with pytest.raises(exception.NoValidHost):
        create(scheduler, uuid, flavor="t.huge")
    assert failed_once(scheduler, notifier, uuid)["fault"].startswith("No valid host: ")


def test_a_local_boot_volume_on_a_full_host_fails_the_create_once(scheduler, notifier) -> None:
    volume = _volume(scheduler)
    uuid = str(uuidlib.uuid4())
    with pytest.raises(exception.NoValidHost):
        create(scheduler, uuid, flavor="t.huge", boot_volume=volume["uuid"])
    failed_once(scheduler, notifier, uuid)


def test_an_unreachable_agent_fails_the_create_once(scheduler, notifier, agent) -> None:
    agent.unreachable = True
    uuid = str(uuidlib.uuid4())
    with pytest.raises(exception.BuildFailed):
        create(scheduler, uuid)
    record = failed_once(scheduler, notifier, uuid)
    assert record["fault"].startswith("cannot reach the agent on %s: " % HOST)
    assert scheduler.store.get_host(HOST, 60)["memory_mb_used"] == 0  # the claim went back


# --- failures of a reschedule -----------------------------------------------------------


def _report_failure(scheduler: Scheduler, uuid: str, fault: str = "disk full") -> None:
    update = type(scheduler.reports).instance_update.__wrapped__  # type: ignore[attr-defined]
    update(scheduler.reports, {}, host=HOST, uuid=uuid, vm_state="error", fault=fault)


def test_a_reschedule_that_finds_no_host_fails_once(scheduler, notifier) -> None:
    uuid = create(scheduler, str(uuidlib.uuid4()))["uuid"]
    _report_failure(scheduler, uuid)  # the only host is tried already
    record = failed_once(scheduler, notifier, uuid)
    assert "earlier attempts: h1: disk full" in record["fault"]


def test_a_reschedule_whose_placement_breaks_fails_once(scheduler, notifier, monkeypatch) -> None:
    uuid = create(scheduler, str(uuidlib.uuid4()))["uuid"]

    def select(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a weigher broke")

    monkeypatch.setattr(scheduler.build._placement(), "select", select)
    _report_failure(scheduler, uuid)
    assert failed_once(scheduler, notifier, uuid)["fault"] == "placement failed: a weigher broke"


def test_a_build_out_of_attempts_fails_once(scheduler, notifier, store) -> None:
    store.report_host(HOST + "b", {"vcpus": 8, "memory_mb": 8192, "disk_gb": 100}, {})
    uuid = create(scheduler, str(uuidlib.uuid4()))["uuid"]
    first = store.get_instance(uuid)["host"]
    update = type(scheduler.reports).instance_update.__wrapped__  # type: ignore[attr-defined]
    update(scheduler.reports, {}, host=first, uuid=uuid, vm_state="error", fault="one")
    second = store.get_instance(uuid)["host"]
    assert second != first
    update(scheduler.reports, {}, host=second, uuid=uuid, vm_state="error", fault="two")
    assert failed_once(scheduler, notifier, uuid)["fault"].startswith("build failed on 2 host(s)")


# --- refused before anything is stored ---------------------------------------------------


@pytest.mark.parametrize(
    "extra, error",
    [
        ({"networks": ["nowhere"]}, exception.NetworkNotFound),
        ({"boot_volume": "nowhere"}, exception.VolumeNotFound),
        ({"flavor": "nowhere"}, exception.FlavorNotFound),
    ],
)
def test_a_create_refused_before_it_is_stored_sends_nothing(
    scheduler, notifier, extra: dict, error: type
) -> None:
    with pytest.raises(error):
        create(scheduler, str(uuidlib.uuid4()), **extra)
    assert notifier.sent == [] and scheduler.store.list_instances() == []


def test_a_create_that_is_cast_sends_no_error(scheduler, notifier, agent) -> None:
    uuid = str(uuidlib.uuid4())
    assert create(scheduler, uuid)["host"] == HOST
    assert notifier.of(uuid) == ["instance.create.start"] and len(agent.builds) == 1
