"""Hypervisor power events: the echo of our own build or action is not reported twice.

libvirt ``test:///default`` and the dir backend in this process; the
scheduler is a stand-in that records the casts. Events are handed to the
manager directly, as the driver's event worker would, after the build or
action released the instance lock.
"""

from __future__ import annotations

import datetime
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver.agent import manager as manager_module
from compute_driver.agent.host import AgentHost
from compute_driver.agent.manager import ComputeManager
from compute_driver.virt.libvirt.driver import LibvirtDriver
from compute_driver.virt.libvirt.events import LifecycleEvent
from network_plugins.noop import NoopNetworkPlugin
from storage_backends.dir import DirStorageBackend

HOST = "unit-host"
CTXT = {"request_id": "req-unit"}

pytestmark = pytest.mark.usefixtures("qemu_img")


class RecordingScheduler:
    def __init__(self) -> None:
        self.casts: list[tuple[str, str, str | None]] = []

    def instance_update(
        self,
        host: str,
        uuid: str,
        vm_state: str,
        power_state: str | None = None,
        fault: str | None = None,
    ) -> None:
        self.casts.append(("instance_update", uuid, power_state))

    def instance_power_changed(self, host: str, uuid: str, power_state: str) -> None:
        self.casts.append(("instance_power_changed", uuid, power_state))

    def instance_deleted(self, host: str, uuid: str) -> None:
        self.casts.append(("instance_deleted", uuid, None))


@pytest.fixture
def scheduler() -> RecordingScheduler:
    return RecordingScheduler()


@pytest.fixture
def manager(
    fresh_conf: cfg.ConfigOpts, tmp_path: Path, scheduler: RecordingScheduler
) -> Iterator[ComputeManager]:
    fresh_conf([], project="compute-driver", default_config_files=[])
    fresh_conf.set_override("host", HOST)
    fresh_conf.set_override("state_path", str(tmp_path / "state"))
    fresh_conf.set_override("uri", "test:///default", group="libvirt")
    fresh_conf.set_override("instances_path", str(tmp_path / "instances"), group="libvirt")
    driver = LibvirtDriver(fresh_conf)
    driver.init_host(HOST)
    backend = DirStorageBackend(fresh_conf)
    yield ComputeManager(
        AgentHost(
            fresh_conf, driver, {"dir": backend}, {"noop": NoopNetworkPlugin(fresh_conf)}, scheduler
        )
    )
    driver.host.close()


@pytest.fixture
def server(manager: ComputeManager, tmp_path: Path) -> Iterator[str]:
    """A built server's UUID (deleted at the end)."""
    image_uuid = str(uuidlib.uuid4())
    image = tmp_path / "state" / "images" / image_uuid / "disk.raw"
    image.parent.mkdir(parents=True)
    with open(image, "wb") as f:
        f.truncate(1024 * 1024)
    uuid = str(uuidlib.uuid4())
    instance: dict[str, Any] = {
        "uuid": uuid,
        "name": "web-1",
        "project": "demo",
        "flavor": {"name": "m1.nano", "vcpus": 1, "memory_mb": 128, "root_gb": 1},
        "image": {
            "uuid": image_uuid,
            "name": "tiny",
            "disk_format": "raw",
            "virtual_size": 1024 * 1024,
        },
        "user_data": "",
        "created_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    manager.build_instance(CTXT, instance=instance)
    yield uuid
    manager.delete_instance(CTXT, uuid=uuid)


def _power_casts(scheduler: RecordingScheduler) -> list[tuple[str, str | None]]:
    return [(uuid, state) for method, uuid, state in scheduler.casts if method != "instance_update"]


def test_the_start_of_our_build_is_not_reported_again(manager, scheduler, server):
    assert scheduler.casts == [("instance_update", server, "running")]
    manager.handle_virt_event(LifecycleEvent(server, "running"))
    assert _power_casts(scheduler) == []


def test_only_the_first_event_after_a_build_can_be_its_echo(manager, scheduler, server):
    manager.handle_virt_event(LifecycleEvent(server, "running"))
    manager.handle_virt_event(LifecycleEvent(server, "paused"))
    manager.handle_virt_event(LifecycleEvent(server, "running"))
    assert _power_casts(scheduler) == [(server, "paused"), (server, "running")]


def test_a_different_state_after_a_build_is_reported(manager, scheduler, server):
    manager.handle_virt_event(LifecycleEvent(server, "crashed"))
    manager.handle_virt_event(LifecycleEvent(server, "running"))
    assert _power_casts(scheduler) == [(server, "crashed"), (server, "running")]


def test_an_echo_too_late_is_reported(manager, scheduler, server, monkeypatch):
    later = manager_module.time.monotonic() + manager_module.ECHO_WINDOW + 1
    monkeypatch.setattr(manager_module.time, "monotonic", lambda: later)
    manager.handle_virt_event(LifecycleEvent(server, "running"))
    assert scheduler.casts[-1] == ("instance_power_changed", server, "running")


def test_the_echo_of_a_power_action_is_not_reported_again(manager, scheduler, server):
    manager.handle_virt_event(LifecycleEvent(server, "running"))
    manager.pause_instance(CTXT, uuid=server)
    manager.handle_virt_event(LifecycleEvent(server, "paused"))
    manager.unpause_instance(CTXT, uuid=server)
    manager.handle_virt_event(LifecycleEvent(server, "running"))
    assert scheduler.casts[1:] == [
        ("instance_update", server, "paused"),
        ("instance_update", server, "running"),
    ]


def test_events_during_an_action_are_left_to_the_action(manager, scheduler, server):
    with manager.host.instance_lock(server):
        manager.handle_virt_event(LifecycleEvent(server, "paused"))
    assert _power_casts(scheduler) == []


def test_a_deleted_server_forgets_its_echo(manager, scheduler, server):
    # The build's "running" was never echoed; once the server is deleted,
    # a "running" of its UUID is news, not that echo.
    manager.delete_instance(CTXT, uuid=server)
    manager.handle_virt_event(LifecycleEvent(server, "running"))
    assert scheduler.casts[-1] == ("instance_power_changed", server, "running")
