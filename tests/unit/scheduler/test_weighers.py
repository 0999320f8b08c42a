"""Each weigher's raw value, and how placement scales, multiplies and sums them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from oslo_config import cfg
from stevedore.extension import Extension, ExtensionManager

from compute_driver.conf import scheduler as scheduler_opts
from compute_driver.scheduler import placement
from compute_driver.scheduler.placement import HostState, RequestSpec
from compute_driver.scheduler.weighers import build_failure, cpu, disk, ram, soft_affinity
from compute_driver.scheduler.weighers.base import BaseHostWeigher

WEIGHERS = [
    ram.RamWeigher,
    cpu.CpuWeigher,
    disk.DiskWeigher,
    build_failure.BuildFailureWeigher,
    soft_affinity.SoftAffinityWeigher,
]
REQUEST = RequestSpec(instance="web", vcpus=1, memory_mb=512, disk_gb=1)


def host(name: str, **fields: Any) -> dict[str, Any]:
    record = {
        "name": name,
        "state": "up",
        "enabled": True,
        "disabled_reason": None,
        "reported_at": "2026-01-01T00:00:00Z",
        "vcpus": 8,
        "vcpus_used": 0,
        "memory_mb": 8192 + 512,
        "memory_mb_used": 0,
        "disk_gb": 100,
        "disk_gb_used": 0,
        "capabilities": {},
    }
    record.update(fields)
    return record


def _entry_point(plugin: type[Any], namespace: str) -> EntryPoint:
    return EntryPoint(plugin.name, "%s:%s" % (plugin.__module__, plugin.__name__), namespace)


def manager(classes: Sequence[type[Any]]) -> ExtensionManager:
    namespace = placement.WEIGHER_NAMESPACE
    return ExtensionManager.make_test_instance(
        [Extension(c.name, _entry_point(c, namespace), c, None) for c in classes],
        namespace=namespace,
    )


@pytest.fixture
def conf(fresh_conf: cfg.ConfigOpts) -> Iterator[cfg.ConfigOpts]:
    fresh_conf.set_override("enabled_filters", [], "scheduler")
    fresh_conf.set_override("cpu_allocation_ratio", 1.0, "scheduler")
    yield fresh_conf
    # NOTE: ConfigOpts objects that register the same OptGroup share its
    # options (oslo.config copies the group shallowly): overrides would
    # leak into later tests.
    for opt in scheduler_opts.OPTS:
        fresh_conf.clear_override(opt.name, "scheduler")


def order(conf: cfg.ConfigOpts, hosts: list[dict[str, Any]]) -> list[str]:
    chooser = placement.Placement(conf, manager([]), manager(WEIGHERS))
    return [h.name for h in chooser.select(hosts, REQUEST).candidates]


def only(conf: cfg.ConfigOpts, weigher: str) -> cfg.ConfigOpts:
    for w in WEIGHERS:
        conf.set_override(w.multiplier_option, 1.0 if w.name == weigher else 0.0, "scheduler")
    return conf


@pytest.mark.parametrize(
    "weigher,value",
    [
        (ram.RamWeigher, 8192 - 1000),  # reservation, then the claims
        (cpu.CpuWeigher, 8 - 3),
        (disk.DiskWeigher, 100 - 40),
        (build_failure.BuildFailureWeigher, -2.0),
    ],
)
def test_raw_values(conf, weigher, value):
    state = HostState.from_record(
        host("h", memory_mb_used=1000, vcpus_used=3, disk_gb_used=40, failed_builds=2)
    )
    assert weigher(conf).weigh(state, REQUEST) == pytest.approx(value)
    assert isinstance(weigher(conf), BaseHostWeigher)


def test_multipliers_come_from_their_options(conf):
    conf.set_override("ram_weight_multiplier", -2.5, "scheduler")
    conf.set_override("build_failure_weight_multiplier", 7.0, "scheduler")
    assert ram.RamWeigher(conf).multiplier == -2.5
    assert build_failure.BuildFailureWeigher(conf).multiplier == 7.0
    assert cpu.CpuWeigher(conf).multiplier == 1.0


def test_multiplier_bounds_are_enforced(conf):
    with pytest.raises(ValueError):
        conf.set_override("ram_weight_multiplier", 5000.0, "scheduler")
    with pytest.raises(ValueError):
        conf.set_override("build_failure_weight_multiplier", -1.0, "scheduler")


def test_ram_spreads_by_default_and_packs_when_negative(conf):
    hosts = [host("full", memory_mb_used=6000), host("empty"), host("half", memory_mb_used=4096)]
    assert order(only(conf, "ram"), hosts) == ["empty", "half", "full"]
    conf.set_override("ram_weight_multiplier", -1.0, "scheduler")
    assert order(conf, hosts) == ["full", "half", "empty"]


def test_cpu_and_disk_each_order_by_what_is_free(conf):
    hosts = [host("a", vcpus_used=6, disk_gb_used=0), host("b", vcpus_used=0, disk_gb_used=90)]
    assert order(only(conf, "cpu"), hosts) == ["b", "a"]
    assert order(only(conf, "disk"), hosts) == ["a", "b"]


def test_values_are_scaled_so_units_do_not_matter(conf):
    # "a" has far more free MiB of RAM; "b" one more free vCPU. Scaled to
    # 0..1, each wins one weigher outright: the tie goes to the name.
    hosts = [host("b", memory_mb_used=4096, vcpus_used=0), host("a", vcpus_used=1)]
    only(conf, "ram")
    conf.set_override("cpu_weight_multiplier", 1.0, "scheduler")
    chooser = placement.Placement(conf, manager([]), manager(WEIGHERS))
    selection = chooser.select(hosts, REQUEST)
    assert selection.weights == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
    assert [h.name for h in selection.candidates] == ["a", "b"]
    conf.set_override("cpu_weight_multiplier", 2.0, "scheduler")
    assert order(conf, hosts) == ["b", "a"]


def test_equal_values_weigh_nothing(conf):
    chooser = placement.Placement(conf, manager([]), manager(WEIGHERS))
    selection = chooser.select([host("b"), host("a")], REQUEST)
    assert selection.weights == {"a": 0.0, "b": 0.0}
    assert [h.name for h in selection.candidates] == ["a", "b"]


def test_failed_builds_outweigh_free_resources_by_default(conf):
    hosts = [
        host("broken-but-empty", failed_builds=3),
        host("busy", memory_mb_used=7000, vcpus_used=7, disk_gb_used=90),
        host("flaky", failed_builds=1),
    ]
    assert order(conf, hosts) == ["busy", "flaky", "broken-but-empty"]
    conf.set_override("build_failure_weight_multiplier", 0.0, "scheduler")
    assert order(conf, hosts)[-1] == "busy"


def test_failed_builds_default_to_zero_while_the_store_has_no_counter(conf):
    record = host("h")
    record.pop("failed_builds", None)
    assert HostState.from_record(record).failed_builds == 0
