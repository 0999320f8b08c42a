"""The objects that cross the bus: each round-trips through its wire form,
and from_wire refuses what its schema refuses with a typed error."""

from __future__ import annotations

from typing import Any

import pytest

from compute_driver import exception, objects
from compute_driver.rpc import schemas
from compute_driver.virt.base import InstanceSpec

UUID = "0b0e9a5c-3f1d-4f53-9d7e-1c9a4f3e2b10"
NET = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
PORT = "6e2d3c4b-5f6a-4b7c-9d8e-0f1a2b3c4d5e"
IMAGE = "7f3e4d5c-6a7b-4c8d-8e9f-1a2b3c4d5e6f"

FLAVOR = {
    "name": "m1.small",
    "vcpus": 2,
    "memory_mb": 512,
    "root_gb": 1,
    "extra_specs": {"hw:cpu_sockets": "1"},
}
IMAGE_WIRE = {
    "uuid": IMAGE,
    "name": "cirros",
    "disk_format": "qcow2",
    "virtual_size": 1 << 30,
    "kernel": True,
    "cmdline": "console=ttyS0",
    "properties": {"hw_disk_bus": "virtio"},
}
VOLUME = {
    "id": "vol-1",
    "backend": "dir",
    "size_gb": 2,
    "location": "/var/lib/volumes/vol-1",
    "format": "qcow2",
    "target_dev": "vdb",
}
NETWORK = {
    "id": NET,
    "name": "net-a",
    "type": "vxlan",
    "segment": 101,
    "physnet": None,
    "mtu": 1450,
    "revision": 3,
}
PORT_WIRE = {
    "id": PORT,
    "network": NETWORK,
    "mac": "52:54:00:00:00:01",
    "address": "10.0.0.5/24",
    "gateway": "10.0.0.1",
}
SERVER = {
    "uuid": UUID,
    "name": "web-1",
    "project": "demo",
    "flavor": FLAVOR,
    "image": IMAGE_WIRE,
    "user_data": "aGVsbG8=",
    "root_clone": "full",
    "root_backend": "dir",
    "boot_volume": {"id": "boot-1", "backend": "nfs", "size_gb": 1},
    "volumes": [VOLUME],
    "ports": [PORT_WIRE],
    "created_at": "2026-12-07T15:00:00Z",
}
HOST_REPORT = {
    "host": "h0",
    "resources": {"vcpus": 4, "memory_mb": 8192, "disk_gb": 100},
    "capabilities": {
        "virt_type": "qemu",
        "arch": "x86_64",
        "network_plugins": ["ovs"],
        "storage_backends": ["dir", "rbd"],
        "shared_storage_backends": ["rbd"],
        "tunnel_ip": "192.0.2.10",
    },
    "instances": [{"uuid": UUID, "power_state": "running"}],
}

#: Each object, a valid wire form, and a change its schema refuses.
CASES: list[tuple[type[Any], dict[str, Any], dict[str, Any]]] = [
    (objects.FlavorSpec, FLAVOR, {"vcpus": 0}),
    (objects.ImageRef, IMAGE_WIRE, {"path": "/etc/shadow"}),
    (objects.VolumeSpec, VOLUME, {"target_dev": "../../x"}),
    (objects.NetworkSpec, NETWORK, {"type": "gre"}),
    (objects.PortSpec, PORT_WIRE, {"mac": "not-a-mac"}),
    (objects.ServerSpec, SERVER, {"name": "web-1\n"}),
    (objects.HostCapacity, HOST_REPORT["resources"], {"vcpus": -1}),
    (objects.HostCapabilities, HOST_REPORT["capabilities"], {"tunnel_ip": "1.2.3"}),
    (objects.InstancePower, HOST_REPORT["instances"][0], {"power_state": "on fire"}),
    (objects.HostReport, HOST_REPORT, {"signature": {"timestamp": 1, "hmac": "0" * 64}}),
]


@pytest.mark.parametrize("cls, wire, _bad", CASES, ids=[c[0].__name__ for c in CASES])
def test_round_trip(cls: Any, wire: dict[str, Any], _bad: dict[str, Any]) -> None:
    typed = cls.from_wire(wire)
    assert typed.to_wire() == wire
    assert cls.from_wire(typed.to_wire()) == typed


@pytest.mark.parametrize("cls, wire, bad", CASES, ids=[c[0].__name__ for c in CASES])
def test_from_wire_refuses_what_the_schema_refuses(
    cls: Any, wire: dict[str, Any], bad: dict[str, Any]
) -> None:
    with pytest.raises(exception.InvalidPayload) as info:
        cls.from_wire({**wire, **bad})
    assert info.value.code == "invalid_payload"
    assert str(info.value).count("\n") == 0


@pytest.mark.parametrize("cls", [c[0] for c in CASES], ids=[c[0].__name__ for c in CASES])
def test_from_wire_refuses_a_non_object(cls: Any) -> None:
    with pytest.raises(exception.InvalidPayload):
        cls.from_wire(["not", "an", "object"])


def test_optional_fields_are_left_out_as_the_scheduler_always_sent_them() -> None:
    server = objects.ServerSpec.from_wire(
        {k: SERVER[k] for k in ("uuid", "name", "project", "flavor", "image", "created_at")}
    )
    assert server.boot_volume is None and server.volumes == () and server.ports == ()
    assert set(server.to_wire()) == {"uuid", "name", "project", "flavor", "image", "created_at"}
    assert objects.VolumeSpec("v", "dir").to_wire() == {"id": "v", "backend": "dir"}
    # NOTE: a network's segment and physnet, an image's cmdline and a port's
    # gateway travel as null when unset (the schemas allow it; agents read it).
    assert objects.NetworkSpec(NET, "n", "flat", 1500).to_wire()["segment"] is None


def test_every_wire_form_is_what_the_rpc_schemas_take() -> None:
    schemas.validate(
        "test",
        "build_instance",
        schemas.COMPUTE_METHODS["build_instance"],
        {"instance": objects.ServerSpec.from_wire(SERVER).to_wire()},
    )
    schemas.validate(
        "test",
        "report_host",
        schemas.REPORT_METHODS["report_host"],
        objects.HostReport.from_wire(HOST_REPORT).to_wire(),
    )


def test_one_flavor_object_from_the_wire_to_the_driver(tmp_path: Any) -> None:
    server = objects.ServerSpec.from_wire(SERVER)
    spec = InstanceSpec.from_server(server, str(tmp_path))
    assert spec.flavor is server.flavor
    assert spec.user_data == b"hello"
    assert not spec.linked_root
    assert spec.ports[0].network.segment == 101
    assert spec.boot_volume == objects.VolumeSpec("boot-1", "nfs", size_gb=1)
    assert spec.image.kernel_path is not None and spec.image.kernel_path.startswith(str(tmp_path))


def test_an_instance_payload_is_checked_when_typed(tmp_path: Any) -> None:
    with pytest.raises(exception.InvalidPayload):
        InstanceSpec.from_payload({**SERVER, "ports": [{**PORT_WIRE, "id": "x"}]}, str(tmp_path))
