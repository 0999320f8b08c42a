"""Each placement filter alone, and every filter loading by its entry-point name."""

from __future__ import annotations

import configparser
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stevedore._cache
from oslo_config import cfg

from compute_driver.conf import scheduler as scheduler_opts
from compute_driver.scheduler import placement
from compute_driver.scheduler.filters import (
    aggregate_extra_specs,
    availability_zone,
    compute,
    cpu,
    disk,
    image_properties,
    network_plugins,
    num_instances,
    ram,
    retry,
    server_group,
    storage_backends,
)
from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.placement import HostState, RequestSpec
from compute_driver.scheduler.weighers.base import BaseHostWeigher

#: What setup.cfg's [options.entry_points] must say (the owner of setup.cfg pastes it).
SETUP_CFG_ENTRY_POINTS = """\
compute_driver.scheduler.filters =
    retry = compute_driver.scheduler.filters.retry:RetryFilter
    compute = compute_driver.scheduler.filters.compute:ComputeFilter
    num_instances = compute_driver.scheduler.filters.num_instances:NumInstancesFilter
    image_properties = compute_driver.scheduler.filters.image_properties:ImagePropertiesFilter
    network_plugins = compute_driver.scheduler.filters.network_plugins:NetworkPluginsFilter
    storage_backends = compute_driver.scheduler.filters.storage_backends:StorageBackendsFilter
    cpu = compute_driver.scheduler.filters.cpu:CpuFilter
    ram = compute_driver.scheduler.filters.ram:RamFilter
    disk = compute_driver.scheduler.filters.disk:DiskFilter
    availability_zone = compute_driver.scheduler.filters.availability_zone:AvailabilityZoneFilter
    aggregate_instance_extra_specs = compute_driver.scheduler.filters.aggregate_extra_specs:AggregateInstanceExtraSpecsFilter
    server_group_affinity = compute_driver.scheduler.filters.server_group:ServerGroupAffinityFilter
    server_group_anti_affinity = compute_driver.scheduler.filters.server_group:ServerGroupAntiAffinityFilter
compute_driver.scheduler.weighers =
    ram = compute_driver.scheduler.weighers.ram:RamWeigher
    cpu = compute_driver.scheduler.weighers.cpu:CpuWeigher
    disk = compute_driver.scheduler.weighers.disk:DiskWeigher
    build_failure = compute_driver.scheduler.weighers.build_failure:BuildFailureWeigher
    soft_affinity = compute_driver.scheduler.weighers.soft_affinity:SoftAffinityWeigher
"""  # noqa: E501 - setup.cfg lines, as they are


def _entry_points(setup_cfg: str) -> dict[str, dict[str, str]]:
    """The scheduler plugin groups of a setup.cfg's [options.entry_points]."""
    parser = configparser.ConfigParser()
    parser.read_string(setup_cfg)
    groups: dict[str, dict[str, str]] = {}
    for group, value in parser["options.entry_points"].items():
        if group.startswith("compute_driver.scheduler."):
            pairs = (line.partition("=") for line in value.strip().splitlines())
            groups[group] = {name.strip(): target.strip() for name, _, target in pairs}
    return groups


ENTRY_POINTS = _entry_points("[options.entry_points]\n" + SETUP_CFG_ENTRY_POINTS)
FAMILIES = {
    placement.FILTER_NAMESPACE: BaseHostFilter,
    placement.WEIGHER_NAMESPACE: BaseHostWeigher,
}


def host(name: str = "h", **fields: Any) -> HostState:
    values: dict[str, Any] = {
        "name": name,
        "up": True,
        "enabled": True,
        "disabled_reason": None,
        "reported_at": "2026-01-01T00:00:00Z",
        "vcpus": 4,
        "vcpus_used": 0,
        "memory_mb": 8192,
        "memory_mb_used": 0,
        "disk_gb": 100,
        "disk_gb_used": 0,
        "capabilities": {
            "virt_type": "kvm",
            "arch": "x86_64",
            "network_plugins": ["linux_bridge", "noop"],
            "storage_backends": ["dir"],
        },
    }
    values.update(fields)
    return HostState(**values)


def request(**fields: Any) -> RequestSpec:
    values: dict[str, Any] = {"instance": "web", "vcpus": 2, "memory_mb": 1024, "disk_gb": 10}
    values.update(fields)
    return RequestSpec(**values)


@pytest.fixture
def conf(fresh_conf: cfg.ConfigOpts) -> Iterator[cfg.ConfigOpts]:
    fresh_conf.set_override("cpu_allocation_ratio", 2.0, "scheduler")
    fresh_conf.set_override("reserved_host_memory_mb", 512, "scheduler")
    yield fresh_conf
    # NOTE: ConfigOpts objects that register the same OptGroup share its
    # options (oslo.config copies the group shallowly): overrides would
    # leak into later tests.
    for opt in scheduler_opts.OPTS:
        fresh_conf.clear_override(opt.name, "scheduler")


# --- the entry points -------------------------------------------------------


@pytest.mark.parametrize(
    "namespace,name,target",
    [(ns, name, target) for ns, eps in ENTRY_POINTS.items() for name, target in eps.items()],
)
def test_entry_point_target_is_a_plugin_of_that_name(namespace, name, target):
    module, _, attr = target.partition(":")
    plugin = getattr(importlib.import_module(module), attr)
    assert issubclass(plugin, FAMILIES[namespace])
    assert not plugin.__abstractmethods__
    assert plugin.name == name


def test_every_plugin_module_has_an_entry_point():
    package_dir = Path(placement.__file__).parent
    for namespace in FAMILIES:
        subdir = namespace.rsplit(".", 1)[1]
        modules = {p.stem for p in (package_dir / subdir).glob("*.py")} - {"__init__", "base"}
        targets = {t.split(":")[0].rsplit(".", 1)[1] for t in ENTRY_POINTS[namespace].values()}
        assert modules == targets, namespace


def test_default_options_name_shipped_plugins(conf):
    assert set(conf.scheduler.enabled_filters) <= set(ENTRY_POINTS[placement.FILTER_NAMESPACE])
    assert set(conf.scheduler.weighers) <= set(ENTRY_POINTS[placement.WEIGHER_NAMESPACE])


def test_placement_loads_the_plugins_by_entry_point_name(conf, tmp_path, monkeypatch):
    """The real stevedore path: a distribution declaring these entry points is found."""
    dist = tmp_path / "compute_driver_scheduler_plugins-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: compute-driver-scheduler-plugins\nVersion: 0.0\n"
    )
    lines = []
    for namespace, eps in ENTRY_POINTS.items():
        lines.append("[%s]" % namespace)
        lines.extend("%s = %s" % item for item in eps.items())
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # NOTE: no cache file in the home directory from a test.
    monkeypatch.setattr(stevedore._cache._c, "_disable_caching", True)
    every_filter = list(ENTRY_POINTS[placement.FILTER_NAMESPACE])
    conf.set_override("enabled_filters", every_filter, "scheduler")

    loaded = placement.Placement(conf)

    assert [f.name for f in loaded.filters] == every_filter
    assert [type(f) for f in loaded.filters] == [
        retry.RetryFilter,
        compute.ComputeFilter,
        num_instances.NumInstancesFilter,
        image_properties.ImagePropertiesFilter,
        network_plugins.NetworkPluginsFilter,
        storage_backends.StorageBackendsFilter,
        cpu.CpuFilter,
        ram.RamFilter,
        disk.DiskFilter,
        availability_zone.AvailabilityZoneFilter,
        aggregate_extra_specs.AggregateInstanceExtraSpecsFilter,
        server_group.ServerGroupAffinityFilter,
        server_group.ServerGroupAntiAffinityFilter,
    ]
    assert [w.name for w in loaded.weighers] == conf.scheduler.weighers


def test_setup_cfg_declares_exactly_these_entry_points(repo_dir):
    assert _entry_points((repo_dir / "setup.cfg").read_text()) == ENTRY_POINTS


# --- the filters --------------------------------------------------------------


def test_retry_skips_hosts_already_tried(conf):
    tried = request(tried_hosts=frozenset({"a"}))
    assert retry.RetryFilter(conf).why_not(host("a"), tried) == "already tried for this build"
    assert retry.RetryFilter(conf).why_not(host("b"), tried) is None


@pytest.mark.parametrize(
    "fields,why",
    [
        ({}, None),
        ({"enabled": False, "disabled_reason": "maintenance"}, "disabled (maintenance)"),
        ({"enabled": False}, "disabled (no reason given)"),
        ({"up": False}, "down (last report 2026-01-01T00:00:00Z)"),
        ({"up": False, "reported_at": None}, "down (last report never)"),
    ],
)
def test_compute(conf, fields, why):
    assert compute.ComputeFilter(conf).why_not(host(**fields), request()) == why


@pytest.mark.parametrize(
    "fields,why",
    [
        ({}, None),
        ({"vcpus": 1}, None),  # 1 CPU at ratio 2.0: exactly enough
        ({"vcpus": 0}, "needs 2 vCPUs, 0 free"),
        ({"vcpus_used": 7}, "needs 2 vCPUs, 1 free"),
    ],
)
def test_cpu_counts_the_allocation_ratio(conf, fields, why):
    assert cpu.CpuFilter(conf).why_not(host(**fields), request()) == why


@pytest.mark.parametrize(
    "fields,why",
    [
        ({"memory_mb": 512 + 1024}, None),  # exact fit after the reservation
        ({"memory_mb": 1024}, "needs 1024 MiB RAM, 512 free"),
        ({"memory_mb_used": 7000}, "needs 1024 MiB RAM, 680 free"),
    ],
)
def test_ram_counts_the_reservation(conf, fields, why):
    assert ram.RamFilter(conf).why_not(host(**fields), request()) == why


def test_ram_ratio_overcommits_what_is_left_after_the_reservation(conf):
    conf.set_override("ram_allocation_ratio", 1.5, "scheduler")
    conf.set_override("reserved_host_memory_mb", 1024, "scheduler")
    state = host(memory_mb=3072, memory_mb_used=1000)
    assert state.free_memory_mb(placement.Limits.from_conf(conf)) == pytest.approx(2072)
    assert ram.RamFilter(conf).why_not(state, request(memory_mb=2072)) is None
    assert ram.RamFilter(conf).why_not(state, request(memory_mb=2073)) is not None


@pytest.mark.parametrize(
    "ratio,fields,why",
    [
        (1.0, {"disk_gb": 10}, None),
        (1.0, {"disk_gb": 5}, "needs 10 GiB disk, 5 free"),
        (2.0, {"disk_gb": 5}, None),
        (2.0, {"disk_gb": 5, "disk_gb_used": 1}, "needs 10 GiB disk, 9 free"),
    ],
)
def test_disk_counts_the_allocation_ratio(conf, ratio, fields, why):
    conf.set_override("disk_allocation_ratio", ratio, "scheduler")
    assert disk.DiskFilter(conf).why_not(host(**fields), request()) == why


def test_num_instances_limit(conf):
    conf.set_override("max_instances_per_host", 3, "scheduler")
    limit = num_instances.NumInstancesFilter(conf)
    assert limit.needs_instance_counts
    assert limit.why_not(host(num_instances=2), request()) is None
    assert (
        limit.why_not(host(num_instances=3), request())
        == "has 3 servers, max_instances_per_host is 3"
    )
    assert limit.why_not(host(num_instances=None), request()) == "its server count is unknown"


# --- image properties ---------------------------------------------------------


def _image_why(conf: cfg.ConfigOpts, props: dict[str, str], **caps: Any) -> str | None:
    capabilities = {"virt_type": "kvm", "arch": "x86_64"}
    capabilities.update(caps)
    for key in [k for k, v in capabilities.items() if v is None]:
        del capabilities[key]
    state = host(capabilities=capabilities)
    return image_properties.ImagePropertiesFilter(conf).why_not(
        state, request(image_properties=props)
    )


@pytest.mark.parametrize(
    "props,caps,why",
    [
        ({}, {}, None),
        ({"hw_disk_bus": "scsi"}, {}, None),
        ({"architecture": "x86_64"}, {}, None),
        ({"architecture": "amd64"}, {}, None),
        ({"architecture": "i686"}, {}, None),  # an x86_64 host runs 32-bit guests
        ({"architecture": "aarch64"}, {}, "image needs arch aarch64, host is x86_64"),
        (
            {"architecture": "x86_64"},
            {"arch": "aarch64"},
            "image needs arch x86_64, host is aarch64",
        ),
        ({"architecture": "arm64"}, {"arch": "aarch64"}, None),
        (
            {"architecture": "x86_64"},
            {"arch": None},
            "image needs arch x86_64; the host does not report its arch",
        ),
        ({"img_hv_type": "kvm"}, {}, None),
        ({"img_hv_type": "kvm"}, {"virt_type": "qemu"}, "image needs virt_type kvm, host has qemu"),
        ({"img_hv_type": "qemu"}, {"virt_type": None}, "image needs virt_type qemu, host has none"),
        ({"hw_cpu_mode": "host-passthrough"}, {}, None),
        ({"hw_cpu_mode": "host-model"}, {"virt_type": "qemu"}, None),
        (
            {"hw_cpu_mode": "host-passthrough"},
            {"virt_type": "qemu"},
            "image needs hw_cpu_mode=host-passthrough, which needs virt_type kvm; host has qemu",
        ),
        (
            {"img_cpu_features": "avx2,aes"},
            {},
            "image needs CPU features aes,avx2; the host does not report its CPU features",
        ),
        ({"img_cpu_features": "AVX2, aes"}, {"cpu_features": ["aes", "avx2", "sse4_2"]}, None),
        (
            {"img_cpu_features": "avx512f aes"},
            {"cpu_features": ["aes", "avx2"]},
            "image needs CPU features the host lacks: avx512f",
        ),
    ],
)
def test_image_properties(conf, props, caps, why):
    assert _image_why(conf, props, **caps) == why


def test_image_properties_reports_the_first_mismatch(conf):
    why = _image_why(conf, {"architecture": "aarch64", "img_hv_type": "qemu"})
    assert why == "image needs arch aarch64, host is x86_64"


# --- network plugins and storage backends ------------------------------------


def test_request_takes_plugins_and_backends_from_the_flavor():
    spec = RequestSpec.from_records(
        "web",
        {
            "vcpus": 1,
            "memory_mb": 512,
            "root_gb": 1,
            "extra_specs": {"network:plugins": "linux_bridge", "storage:backends": "rbd, dir"},
        },
        {"properties": {"architecture": "x86_64"}},
        tried_hosts=["a"],
    )
    assert spec.network_plugins == frozenset({"linux_bridge"})
    assert spec.storage_backends == frozenset({"rbd", "dir"})
    assert spec.image_properties == {"architecture": "x86_64"}
    assert spec.tried_hosts == frozenset({"a"})
    assert (spec.vcpus, spec.memory_mb, spec.disk_gb) == (1, 512, 1)


def test_request_adds_the_backends_its_disks_need_to_the_flavors():
    flavor = {
        "vcpus": 1,
        "memory_mb": 512,
        "root_gb": 1,
        "extra_specs": {"storage:backends": "dir"},
    }
    spec = RequestSpec.from_records("web", flavor, {}, storage_backends={"rbd"})
    assert spec.storage_backends == frozenset({"dir", "rbd"})
    assert (
        RequestSpec.from_records("web", dict(flavor, extra_specs={}), {}).storage_backends == set()
    )


@pytest.mark.parametrize(
    "needed,why",
    [
        (frozenset(), None),
        (frozenset({"linux_bridge"}), None),
        (
            frozenset({"linux_bridge", "ovs"}),
            "lacks network plugin(s) ovs (has: linux_bridge,noop)",
        ),
    ],
)
def test_network_plugins(conf, needed, why):
    check = network_plugins.NetworkPluginsFilter(conf)
    assert check.why_not(host(), request(network_plugins=needed)) == why


def test_network_plugins_of_a_host_that_reports_none(conf):
    check = network_plugins.NetworkPluginsFilter(conf)
    why = check.why_not(host(capabilities={}), request(network_plugins=frozenset({"noop"})))
    assert why == "lacks network plugin(s) noop (has: none)"


@pytest.mark.parametrize(
    "needed,why",
    [
        (frozenset(), None),
        (frozenset({"dir"}), None),
        (frozenset({"rbd", "dir"}), "lacks storage backend(s) rbd (has: dir)"),
    ],
)
def test_storage_backends(conf, needed, why):
    check = storage_backends.StorageBackendsFilter(conf)
    assert check.why_not(host(), request(storage_backends=needed)) == why
