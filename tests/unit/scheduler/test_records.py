"""records.py: from a store record to what an agent is sent, in one place."""

from __future__ import annotations

from typing import Any

from compute_driver import objects
from compute_driver.rpc import schemas
from compute_driver.scheduler import imagestore, networks, records, volumes

UUID = "0b0e9a5c-3f1d-4f53-9d7e-1c9a4f3e2b10"
NET = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
PORT = "6e2d3c4b-5f6a-4b7c-9d8e-0f1a2b3c4d5e"
IMAGE = "7f3e4d5c-6a7b-4c8d-8e9f-1a2b3c4d5e6f"

INSTANCE = {
    "uuid": UUID,
    "name": "web-1",
    "project": "demo",
    "flavor": "m1.small",
    "vcpus": 2,
    "memory_mb": 512,
    "root_gb": 1,
    "extra_specs": {"hw:cpu_sockets": "1"},
    "image": IMAGE,
    "root_clone": "linked",
    "root_backend": None,
    "created_at": "2026-12-07T15:00:00Z",
}
IMAGE_RECORD = {
    "uuid": IMAGE,
    "name": "cirros",
    "disk_format": "qcow2",
    "path": "/var/lib/compute-driver/images/x/disk.qcow2",
    "virtual_size": 1 << 30,
    "kernel_path": "/var/lib/compute-driver/images/x/kernel",
    "initrd_path": "/var/lib/compute-driver/images/x/initrd",
    "cmdline": None,
    "properties": {},
}


def _volume(**fields: Any) -> dict[str, Any]:
    return {
        "uuid": "vol-1",
        "backend": "dir",
        "size_gb": 2,
        "location": None,
        "format": "qcow2",
        "target_dev": None,
        "boot": False,
        **fields,
    }


NETWORK = {
    "uuid": NET,
    "name": "net-a",
    "type": "vlan",
    "segment": 7,
    "physnet": "physnet1",
    "mtu": 1500,
}
PORT_RECORD = {
    "uuid": PORT,
    "mac": "52:54:00:00:00:01",
    "address": "10.0.0.5/24",
    "gateway": None,
}


def test_the_flavor_copied_into_a_server_is_one_object() -> None:
    flavor = records.instance_flavor(INSTANCE)
    assert flavor == objects.FlavorSpec("m1.small", 2, 512, 1, {"hw:cpu_sockets": "1"})
    assert records.server_spec(INSTANCE, IMAGE_RECORD, None).flavor == flavor


def test_an_agent_is_sent_no_image_path() -> None:
    wire = records.image_ref(IMAGE_RECORD).to_wire()
    assert wire["kernel"] is True
    assert not any("/" in str(value) for value in wire.values())
    assert imagestore.agent_image(IMAGE_RECORD) == wire


def test_a_volume_is_sent_as_far_as_its_backend_made_it() -> None:
    assert volumes.agent_volume(_volume()) == {"id": "vol-1", "backend": "dir", "size_gb": 2}
    made = volumes.agent_volume(_volume(location="/v/vol-1", target_dev="vdb"))
    assert made == {
        "id": "vol-1",
        "backend": "dir",
        "size_gb": 2,
        "location": "/v/vol-1",
        "format": "qcow2",
        "target_dev": "vdb",
    }


def test_a_port_carries_its_network() -> None:
    wire = networks.agent_port(PORT_RECORD, NETWORK)
    assert wire["network"] == networks.agent_network(NETWORK)
    assert wire["network"]["revision"] == 0 and wire["gateway"] is None
    assert objects.PortSpec.from_wire(wire) == records.port_spec(PORT_RECORD, NETWORK)


def test_the_build_payload_is_what_the_compute_api_takes() -> None:
    server = records.server_spec(
        INSTANCE,
        IMAGE_RECORD,
        "aGVsbG8=",
        root_clone="linked",
        boot_volume=_volume(uuid="boot-1", location="/v/boot-1", boot=True),
        volumes=[_volume(location="/v/vol-1", target_dev="vdb")],
        ports=[records.port_spec(PORT_RECORD, NETWORK)],
    )
    wire = server.to_wire()
    schemas.validate("test", "build", schemas.COMPUTE_METHODS["build_instance"], {"instance": wire})
    assert objects.ServerSpec.from_wire(wire) == server
    bare = records.server_spec(INSTANCE, IMAGE_RECORD, None).to_wire()
    assert set(bare) == {"uuid", "name", "project", "flavor", "image", "created_at"}
