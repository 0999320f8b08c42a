"""A host object with recording fakes for its collaborators, for the agent's endpoints.

The fixture :func:`make_host` is registered by this directory's conftest.

The endpoints receive an :class:`~compute_driver.agent.host.AgentHost`; here
it is a real one, built from a real configuration, holding fakes for the
driver, one storage backend, one network plugin and the scheduler client.
Each fake records what it was asked and, for the driver, whether the
instance's lock was held at the time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver.agent.host import AgentHost
from network_plugins import base as net_base
from storage_backends import base as storage_base

HOST = "unit-host"


class FakeDriver:
    """Records each call with whether the lock of its instance was held."""

    def __init__(self) -> None:
        self.host: AgentHost | None = None
        self.calls: list[tuple[str, str, bool]] = []

    def _record(self, method: str, uuid: str) -> None:
        assert self.host is not None
        self.calls.append((method, uuid, self.host.instance_lock(uuid).locked()))

    def attach_volume(self, uuid: str, disk: Any, ref: Any) -> str:
        self._record("attach_volume", uuid)
        return "vdb"

    def detach_volume(self, uuid: str, volume_id: str, timeout: int) -> None:
        self._record("detach_volume", uuid)

    def extend_volume(self, uuid: str, volume_id: str, size: int) -> None:
        self._record("extend_volume", uuid)

    def attach_interface(self, uuid: str, interface: Any, *args: Any) -> None:
        self._record("attach_interface", uuid)

    def detach_interface(self, uuid: str, port_id: str, timeout: int) -> None:
        self._record("detach_interface", uuid)

    def get_host_resources(self) -> Any:
        return _Resources()

    def power_states(self) -> dict[str, str]:
        return {}


class _Resources:
    vcpus = 4
    memory_mb = 4096
    virt_type = "qemu"
    arch = "x86_64"
    hypervisor = "QEMU"
    hypervisor_version = 8002000


class FakeBackend:
    """A storage backend that keeps volumes in a dict and records calls."""

    name = "fake"

    def __init__(self) -> None:
        self.volumes: dict[str, storage_base.Volume] = {}
        self.calls: list[tuple[str, str]] = []

    def describe(self) -> storage_base.Description:
        return storage_base.Description(name=self.name, shared=False, formats=("raw",), resize=True)

    def capacity(self) -> storage_base.Capacity:
        return storage_base.Capacity(total=10 * 1024**3, free=10 * 1024**3)

    def create_volume(self, volume_id: str, size_gb: int) -> storage_base.Volume:
        self.calls.append(("create_volume", volume_id))
        volume = storage_base.Volume(volume_id, self.name, size_gb, "raw", "/fake/" + volume_id)
        self.volumes[volume_id] = volume
        return volume

    def get_volume(self, volume_id: str) -> storage_base.Volume:
        return self.volumes[volume_id]

    def delete_volume(self, volume_id: str) -> None:
        self.calls.append(("delete_volume", volume_id))
        self.volumes.pop(volume_id, None)

    def disk_config(self, volume: storage_base.Volume) -> Any:
        return {"disk": volume.id}


class FakePlugin:
    """A network plugin that records calls and reports ``tunnel`` as its endpoint."""

    name = "rec"

    def __init__(self, tunnel: str | None = None) -> None:
        self.tunnel = tunnel
        self.calls: list[tuple[str, Any]] = []
        self.topologies: list[list[str]] = []

    def describe(self) -> net_base.Description:
        return net_base.Description(name=self.name, network_types=("vxlan",), tunnels=True)

    def tunnel_endpoint(self) -> str | None:
        return self.tunnel

    def ensure_network(self, network: net_base.Network) -> None:
        self.calls.append(("ensure_network", network.id))

    def plug(self, port: net_base.Port, instance_uuid: str) -> None:
        self.calls.append(("plug", port.id))

    def unplug(self, port: net_base.Port, instance_uuid: str) -> None:
        self.calls.append(("unplug", port.id))

    def interface_config(self, port: net_base.Port) -> Any:
        return {"interface": port.id}

    def update_topology(self, network: net_base.Network, remote_endpoints: list[str]) -> None:
        self.topologies.append(remote_endpoints)


class FakeScheduler:
    """Stands in for the reports client: records every report."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []

    def report_host(self, host: str, **report: Any) -> None:
        self.reports.append(("report_host", dict(report, host=host)))


@pytest.fixture
def make_host(fresh_conf: cfg.ConfigOpts) -> Callable[..., AgentHost]:
    """``make_host(plugin=, backend=, **conf_overrides)``: an AgentHost of fakes.

    Overrides are ``(group, option)`` keys, e.g. ``{("agent_reports", "secret"): "s"}``.
    """
    fresh_conf([], project="compute-driver", default_config_files=[])
    fresh_conf.set_override("host", HOST)
    fresh_conf.set_override("network_plugins", ["rec"], group="agent")
    fresh_conf.set_override("root_backend", "fake", group="storage")

    def make(
        plugin: FakePlugin | None = None,
        backend: FakeBackend | None = None,
        overrides: dict[tuple[str, str], Any] | None = None,
    ) -> AgentHost:
        for (group, name), value in (overrides or {}).items():
            fresh_conf.set_override(name, value, group=group)
        driver = FakeDriver()
        host = AgentHost(
            fresh_conf,
            driver,  # type: ignore[arg-type]
            {"fake": backend or FakeBackend()},  # type: ignore[dict-item]
            {"rec": plugin or FakePlugin()},  # type: ignore[dict-item]
            FakeScheduler(),  # type: ignore[arg-type]
        )
        driver.host = host
        return host

    return make
