"""guest_properties: values of flavor extra specs and image properties, checked at the door.

Each case here was stored before (only keys were checked) and every server
built from it ended in ERROR.
"""

from __future__ import annotations

import ast
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oslo_messaging as messaging
import pytest

from compute_driver import exception, guest_properties
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.store import Store

ESC = "\x1b"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(Database("sqlite:///%s" % (tmp_path / "s.sqlite")))
    store.db.upgrade()
    yield store
    store.db.engine.dispose()


def _image_fields(**extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        uuid=str(uuidlib.uuid4()),
        name="img",
        disk_format="raw",
        path="/images/img/disk.raw",
        size_bytes=1,
        virtual_size=1,
        checksum="0" * 64,
    )
    fields.update(extra)
    return fields


BAD_FLAVORS = [
    ({"quota:disk_total_bytes_sec": "1" * 40}, r"quota:disk_total_bytes_sec=.*<= 1000000000000000"),
    ({"quota:disk_read_iops_sec": "10000000000000000"}, r"<= 1000000000000000"),
    ({"hw:cpu_sockets": "0"}, r"hw:cpu_sockets='0'.*>= 1"),
    ({"hw:cpu_sockets": "3"}, r"the product must equal the vCPUs"),
    ({"hw:numa_nodes": "100000"}, r"hw:numa_nodes='100000'.*<= 128"),
    ({"hw:numa_nodes": "3"}, r"must divide the flavor's 2 vCPUs"),
    ({"hw_rng:rate_bytes": "-1"}, r"hw_rng:rate_bytes='-1'.*>= 1"),
    ({"hw_rng:rate_bytes": "4294967296"}, r"<= 4294967295"),
    ({"hw_rng:rate_period": "100"}, r"needs hw_rng:rate_bytes"),
    ({"hw:cpu_policy": "mixed"}, r"allowed: shared, dedicated"),
    ({"hw:mem_page_size": "2MB"}, r"a power of two"),
    ({"hw:mem_page_size": "3000"}, r"a power of two"),
    (
        {"quota:disk_total_iops_sec": "5", "quota:disk_read_iops_sec": "5"},
        r"excludes quota:disk_read_iops_sec",
    ),
    ({"hw_disk_bus": "scsi"}, r"belongs on the image"),
    ({"hw:cpu_polcy": "dedicated"}, r"unknown key"),
]

BAD_IMAGES = [
    ({"hw_disk_bus": "floppy"}, None, r"hw_disk_bus='floppy'.*allowed: virtio, scsi, sata, ide"),
    (
        {"hw_cpu_mode": "custom", "hw_cpu_model": "<qemu64>&"},
        None,
        r"hw_cpu_model='<qemu64>&'.*not a CPU model name",
    ),
    (
        {"hw_cpu_mode": "custom", "hw_cpu_model": "qemu64" + ESC + "[2J"},
        None,
        r"hw_cpu_model='qemu64\\x1b\[2J'.*not a CPU model name",
    ),
    ({"hw_cpu_mode": "custom", "hw_cpu_model": "qemu 64"}, None, r"not a CPU model name"),
    ({"hw_cpu_mode": "custom", "hw_cpu_model": "q" * 65}, None, r"at most 64"),
    ({"hw_cpu_model": "qemu64"}, None, r"needs hw_cpu_mode=custom"),
    ({"hw_cpu_mode": "custom"}, None, r"needs hw_cpu_model"),
    ({"hw_mem_stats_period": "-5"}, None, r"hw_mem_stats_period='-5'.*>= 0"),
    ({"hw_mem_stats_period": "9" * 40}, None, r"<= 2147483647"),
    ({"hw_rng": "maybe"}, None, r"allowed: yes, no"),
    ({"hw_disk_io": "native", "hw_disk_cache": "writeback"}, None, r"O_DIRECT"),
    ({"hw_disk_detect_zeroes": "unmap"}, None, r"needs hw_disk_discard=unmap"),
    ({"hw:numa_nodes": "2"}, None, r"belongs on the flavor"),
    ({}, "console=ttyS0" + ESC + "]0;pwned\a", r"cmdline=.*control characters"),
    ({}, "console=ttyS0\r\nroot=/dev/vda", r"control characters"),
    ({}, "a" * 2048, r"cmdline='a{77}\.\.\.'.*at most 2047 bytes"),
]


@pytest.mark.parametrize(("specs", "match"), BAD_FLAVORS)
def test_flavor_values_are_checked(specs: dict[str, str], match: str) -> None:
    with pytest.raises(exception.GuestConfigError, match=match) as info:
        guest_properties.check_flavor(2, 512, specs)
    assert "\n" not in str(info.value)
    assert info.value.code == "invalid_guest_config"


@pytest.mark.parametrize(("props", "cmdline", "match"), BAD_IMAGES)
def test_image_values_are_checked(props: dict[str, str], cmdline: str | None, match: str) -> None:
    with pytest.raises(exception.GuestConfigError, match=match) as info:
        guest_properties.check_image(props, cmdline)
    assert "\n" not in str(info.value) and ESC not in str(info.value)


def test_good_values_pass() -> None:
    guest_properties.check_flavor(
        4,
        1024,
        {
            "hw:cpu_sockets": "2",
            "hw:cpu_threads": "2",
            "hw:numa_nodes": "2",
            "hw:cpu_policy": "dedicated",
            "hw:mem_page_size": "2048",
            "hw_rng:rate_bytes": "1024",
            "hw_rng:rate_period": "1000",
            "quota:disk_total_bytes_sec": "1000000000000000",
            "aggregate_instance_extra_specs:ssd": "true",
        },
    )
    guest_properties.check_flavor(1, 64, {"hw:mem_page_size": "large"})
    guest_properties.check_image(
        {
            "hw_cpu_mode": "custom",
            "hw_cpu_model": "Skylake-Client-IBRS",
            "hw_disk_bus": "scsi",
            "hw_disk_io": "native",
            "hw_mem_stats_period": "0",
            "hw_rng": "No",
            "os_distro": "anything at all",
        },
        "console=ttyS0 root=/dev/vda rw quiet",
    )


@pytest.mark.parametrize(("specs", "match"), BAD_FLAVORS[:6])
def test_the_store_refuses_a_bad_flavor_and_stores_nothing(
    store: Store, specs: dict[str, str], match: str
) -> None:
    before = Catalog(store.db).list_flavors()
    with pytest.raises(exception.GuestConfigError, match=match):
        Catalog(store.db).create_flavor("bad", 2, 512, 1, specs)
    assert Catalog(store.db).list_flavors() == before


@pytest.mark.parametrize(("props", "cmdline", "match"), BAD_IMAGES[:3] + BAD_IMAGES[-3:])
def test_the_store_refuses_a_bad_image_and_stores_nothing(
    store: Store, props: dict[str, str], cmdline: str | None, match: str
) -> None:
    with pytest.raises(exception.GuestConfigError, match=match):
        Catalog(store.db).create_image(**_image_fields(properties=props, cmdline=cmdline))
    assert Catalog(store.db).list_images() == []


def test_flavor_create_over_rpc_answers_the_typed_error(store: Store, fresh_conf, tmp_path) -> None:
    from compute_driver.scheduler.flavors import FlavorEndpoint

    fresh_conf.set_override("store_path", str(tmp_path / "images"), "image")
    flavors = FlavorEndpoint(fresh_conf, Catalog(store.db))
    with pytest.raises(messaging.ExpectedException) as info:
        flavors.create_flavor(
            {"admin": True},
            name="bad",
            vcpus=1,
            memory_mb=256,
            root_gb=1,
            extra_specs={"hw:numa_nodes": "0"},
        )
    assert isinstance(info.value.__cause__, exception.GuestConfigError)
    assert "bad" not in {f["name"] for f in Catalog(store.db).list_flavors()}


def test_the_module_is_neutral() -> None:
    """It imports the standard library and compute_driver.exception, nothing else of ours."""
    tree = ast.parse(Path(guest_properties.__file__).read_text())
    ours = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        ours |= {n for n in names if n.split(".")[0] in ("compute_driver", "network_plugins")}
    assert ours <= {"compute_driver.exception", "compute_driver.exception.GuestConfigError"}


def test_every_rule_names_a_documented_key() -> None:
    doc = guest_properties.__doc__ or ""
    rules = {**guest_properties.FLAVOR_RULES, **guest_properties.IMAGE_RULES}
    assert all(f"``{key}``" in doc for key in rules)
