"""Settling servers a stopped scheduler left in flight (recovery.py), and the claim
that refuses a server no longer waiting for a host (Store.claim)."""

from __future__ import annotations

import datetime
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import pytest

from compute_driver import exception
from compute_driver.scheduler import recovery
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.models import utcnow
from compute_driver.scheduler.store import Store

HOST = "compute-1"
LIMITS = {"cpu_ratio": 1.0, "ram_ratio": 1.0, "disk_ratio": 1.0, "reserved_mb": 0}
GRACE = 60


class FakeCompute:
    def __init__(self, fail: bool = False) -> None:
        self.casts: list[tuple[str, str, str]] = []
        self.fail = fail

    def build_instance(self, host: str, instance: dict[str, Any]) -> None:
        if self.fail:
            raise exception.MessagingError(service="compute." + host, reason="down")
        self.casts.append(("build", host, instance["uuid"]))

    def delete_instance(self, host: str, uuid: str) -> None:
        self.casts.append(("delete", host, uuid))


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    store = Store(Database("sqlite:///%s" % (tmp_path / "s.sqlite")))
    store.db.upgrade()
    store.report_host(HOST, {"vcpus": 4, "memory_mb": 1024, "disk_gb": 10}, {})
    yield store
    store.db.engine.dispose()


@pytest.fixture
def image(store: Store) -> dict[str, Any]:
    return Catalog(store.db).create_image(
        uuid=str(uuidlib.uuid4()),
        name="img",
        disk_format="raw",
        path="/images/img/disk",
        size_bytes=1024,
        virtual_size=1024,
        checksum="0" * 64,
    )


def _server(store: Store, image: dict[str, Any]) -> str:
    uuid = str(uuidlib.uuid4())
    store.create_instance(
        uuid=uuid,
        name="s-" + uuid[:8],
        project="p",
        flavor_name="f",
        vcpus=1,
        memory_mb=128,
        root_gb=1,
        extra_specs={},
        image_uuid=image["uuid"],
    )
    return uuid


def _recovery(store: Store, compute: FakeCompute) -> recovery.InFlightRecovery:
    return recovery.InFlightRecovery(
        store.db,
        Catalog(store.db),
        compute,
        lambda uuid, image: {"uuid": uuid, "image": image["uuid"]},
        GRACE,
    )


def _later() -> datetime.datetime:
    return utcnow() + datetime.timedelta(seconds=GRACE + 1)


def _used(store: Store) -> tuple[int, int, int]:
    host = store.get_host(HOST, 60)
    return host["vcpus_used"], host["memory_mb_used"], host["disk_gb_used"]


def test_unplaced_server_fails_only_after_grace(store: Store, image: dict[str, Any]) -> None:
    uuid = _server(store, image)
    sweeper = _recovery(store, FakeCompute())

    assert sweeper.sweep().failed == []  # its scheduler may still be placing it
    assert store.get_instance(uuid)["task_state"] == "scheduling"

    assert sweeper.sweep(now=_later()).failed == [uuid]
    record = store.get_instance(uuid)
    assert (record["vm_state"], record["task_state"]) == ("error", None)
    assert record["fault"] == recovery.SCHEDULING_LOST
    assert _used(store) == (0, 0, 0)


def test_claim_refuses_a_server_recovery_failed(store: Store, image: dict[str, Any]) -> None:
    """A scheduler still placing it loses the race cleanly: no claim is left behind."""
    uuid = _server(store, image)
    _recovery(store, FakeCompute()).sweep(now=_later())

    assert not store.claim(HOST, 1, 128, 1, LIMITS, uuid)
    assert _used(store) == (0, 0, 0)
    assert store.get_instance(uuid)["host"] is None


def test_claim_refuses_a_server_deleted_while_scheduling(
    store: Store, image: dict[str, Any]
) -> None:
    uuid = _server(store, image)
    _record, needs_agent = store.begin_delete(uuid)
    assert not needs_agent  # unplaced: deleted at once

    assert not store.claim(HOST, 1, 128, 1, LIMITS, uuid)
    assert _used(store) == (0, 0, 0)


def test_claim_places_a_waiting_server(store: Store, image: dict[str, Any]) -> None:
    uuid = _server(store, image)
    assert store.claim(HOST, 1, 128, 1, LIMITS, uuid)
    assert _used(store) == (1, 128, 1)
    assert not store.claim(HOST, 1, 128, 1, LIMITS, uuid)  # never twice
    assert _used(store) == (1, 128, 1)


def test_placed_build_is_cast_again_once(store: Store, image: dict[str, Any]) -> None:
    uuid = _server(store, image)
    assert store.claim(HOST, 1, 128, 1, LIMITS, uuid)
    compute = FakeCompute()
    sweeper = _recovery(store, compute)

    assert sweeper.sweep().rebuilt == []
    assert sweeper.sweep(now=_later()).rebuilt == [uuid]
    assert sweeper.sweep(now=_later()).rebuilt == []
    assert compute.casts == [("build", HOST, uuid)]
    # The claim stays: the agent reports the server as it finds it.
    assert store.get_instance(uuid)["task_state"] == "spawning"
    assert _used(store) == (1, 128, 1)


def test_failed_recast_is_logged_and_not_repeated(store: Store, image: dict[str, Any]) -> None:
    uuid = _server(store, image)
    assert store.claim(HOST, 1, 128, 1, LIMITS, uuid)
    sweeper = _recovery(store, FakeCompute(fail=True))

    assert sweeper.sweep(now=_later()).rebuilt == []
    assert sweeper.sweep(now=_later()).rebuilt == []
    assert store.get_instance(uuid)["task_state"] == "spawning"


def test_stuck_delete_is_cast_again(store: Store, image: dict[str, Any]) -> None:
    uuid = _server(store, image)
    assert store.claim(HOST, 1, 128, 1, LIMITS, uuid)
    store.update_instance(uuid, vm_state="active", task_state=None)
    _record, needs_agent = store.begin_delete(uuid)
    assert needs_agent
    compute = FakeCompute()

    assert _recovery(store, compute).sweep(now=_later()).redeleted == [uuid]
    assert compute.casts == [("delete", HOST, uuid)]


def test_settled_servers_are_left_alone(store: Store, image: dict[str, Any]) -> None:
    active = _server(store, image)
    assert store.claim(HOST, 1, 128, 1, LIMITS, active)
    store.update_instance(active, vm_state="active", task_state=None)
    failed = _server(store, image)
    store.fail_instance(failed, "No valid host: none")
    compute = FakeCompute()

    result = _recovery(store, compute).sweep(now=_later())
    assert (result.failed, result.rebuilt, result.redeleted, compute.casts) == ([], [], [], [])
