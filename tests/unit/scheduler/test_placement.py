"""Placement: filters drop hosts and say why, weighers order the rest, the claim decides."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator, Sequence
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from oslo_config import cfg
from stevedore.extension import Extension, ExtensionManager

from compute_driver import exception
from compute_driver.conf import scheduler as scheduler_opts
from compute_driver.rpc.context import RequestContext
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
from compute_driver.scheduler.models import Host
from compute_driver.scheduler.placement import RequestSpec
from compute_driver.scheduler.reports import ReportEndpoint
from compute_driver.scheduler.weighers import build_failure, soft_affinity
from compute_driver.scheduler.weighers import cpu as cpu_weigher
from compute_driver.scheduler.weighers import disk as disk_weigher
from compute_driver.scheduler.weighers import ram as ram_weigher

FILTERS = [
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
WEIGHERS = [
    ram_weigher.RamWeigher,
    cpu_weigher.CpuWeigher,
    disk_weigher.DiskWeigher,
    build_failure.BuildFailureWeigher,
    soft_affinity.SoftAffinityWeigher,
]
NEED = RequestSpec(instance="web", vcpus=2, memory_mb=1024, disk_gb=10)


def _entry_point(plugin: type[Any], namespace: str) -> EntryPoint:
    return EntryPoint(plugin.name, "%s:%s" % (plugin.__module__, plugin.__name__), namespace)


def extensions(classes: Sequence[type[Any]], namespace: str) -> ExtensionManager:
    """The shipped plugins as stevedore would find them under their entry-point names."""
    return ExtensionManager.make_test_instance(
        [Extension(c.name, _entry_point(c, namespace), c, None) for c in classes],
        namespace=namespace,
    )


def chooser(conf: cfg.ConfigOpts) -> placement.Placement:
    return placement.Placement(
        conf,
        extensions(FILTERS, placement.FILTER_NAMESPACE),
        extensions(WEIGHERS, placement.WEIGHER_NAMESPACE),
    )


def host(name: str, **fields: Any) -> dict[str, Any]:
    record = {
        "name": name,
        "state": "up",
        "enabled": True,
        "disabled_reason": None,
        "vcpus": 4,
        "vcpus_used": 0,
        "memory_mb": 8192,
        "memory_mb_used": 0,
        "disk_gb": 100,
        "disk_gb_used": 0,
        "capabilities": {"virt_type": "kvm", "arch": "x86_64"},
        "reported_at": "2026-01-01T00:00:00Z",
    }
    record.update(fields)
    return record


def names(selection: placement.Selection) -> list[str]:
    return [h.name for h in selection.candidates]


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


BAD_HOSTS = [
    host("disabled", enabled=False, disabled_reason="maintenance"),
    host("disabled-silently", enabled=False),
    host("down", state="down"),
    host("never-reported", state="down", reported_at=None),
    host("no-cpus", vcpus=0),
    host("busy-cpus", vcpus_used=7),
    host("small-ram", memory_mb=1024),
    host("small-disk", disk_gb=5),
]


def test_filters_each_bad_host_with_its_reason(conf):
    selection = chooser(conf).select(BAD_HOSTS + [host("ok")], NEED)
    assert names(selection) == ["ok"]
    assert selection.considered == 9
    assert selection.report() == [
        {"filter": "retry", "removed": 0, "reasons": []},
        {
            "filter": "compute",
            "removed": 4,
            "reasons": [
                "disabled: disabled (maintenance)",
                "disabled-silently: disabled (no reason given)",
                "down: down (last report 2026-01-01T00:00:00Z)",
            ],
        },
        {"filter": "availability_zone", "removed": 0, "reasons": []},
        {"filter": "aggregate_instance_extra_specs", "removed": 0, "reasons": []},
        {"filter": "server_group_affinity", "removed": 0, "reasons": []},
        {"filter": "server_group_anti_affinity", "removed": 0, "reasons": []},
        {"filter": "image_properties", "removed": 0, "reasons": []},
        {"filter": "network_plugins", "removed": 0, "reasons": []},
        {"filter": "storage_backends", "removed": 0, "reasons": []},
        {
            "filter": "cpu",
            "removed": 2,
            "reasons": ["no-cpus: needs 2 vCPUs, 0 free", "busy-cpus: needs 2 vCPUs, 1 free"],
        },
        {"filter": "ram", "removed": 1, "reasons": ["small-ram: needs 1024 MiB RAM, 512 free"]},
        {"filter": "disk", "removed": 1, "reasons": ["small-disk: needs 10 GiB disk, 5 free"]},
    ]


def test_no_valid_host_explains_itself_per_filter_on_one_line(conf):
    selection = chooser(conf).select(BAD_HOSTS, NEED)
    assert selection.candidates == []
    assert selection.explain() == (
        "8 host(s) considered; "
        "[compute] removed 4: disabled: disabled (maintenance); "
        "disabled-silently: disabled (no reason given); "
        "down: down (last report 2026-01-01T00:00:00Z); and 1 more. "
        "[cpu] removed 2: no-cpus: needs 2 vCPUs, 0 free; busy-cpus: needs 2 vCPUs, 1 free. "
        "[ram] removed 1: small-ram: needs 1024 MiB RAM, 512 free. "
        "[disk] removed 1: small-disk: needs 10 GiB disk, 5 free"
    )
    assert "\n" not in selection.explain()


def test_filters_stop_once_no_host_is_left(conf):
    selection = chooser(conf).select([host("off", enabled=False)], NEED)
    assert [f["filter"] for f in selection.report()] == ["retry", "compute"]


def test_few_cpus_fits_with_overcommit(conf):
    # 1 CPU at ratio 2.0 gives 2 vCPUs: exactly enough.
    selection = chooser(conf).select([host("one-cpu", vcpus=1)], NEED)
    assert names(selection) == ["one-cpu"]
    assert all(f.removed == 0 for f in selection.filters)


def test_exact_fit_is_accepted(conf):
    exact = host("exact", vcpus=1, memory_mb=512 + 1024, disk_gb=10)
    assert names(chooser(conf).select([exact], NEED)) == ["exact"]


def test_sorted_by_free_ram_then_name(conf):
    hosts = [
        host("b-4g", memory_mb=4096 + 512),
        host("c-16g", memory_mb=16384 + 512),
        host("a-4g", memory_mb=4096 + 512),
        host("d-16g-half-used", memory_mb=16384 + 512, memory_mb_used=8192),
    ]
    assert names(chooser(conf).select(hosts, NEED)) == ["c-16g", "d-16g-half-used", "a-4g", "b-4g"]


def test_no_hosts(conf):
    selection = chooser(conf).select([], NEED)
    assert selection.candidates == [] and selection.report() == []
    assert selection.explain() == "no compute hosts have reported"


def test_a_lost_claim_is_part_of_the_explanation(conf):
    selection = chooser(conf).select([host("a"), host("b")], NEED)
    for candidate in selection.candidates:
        selection.claim_failed(candidate.name)
    assert selection.explain().endswith(
        "[claim] removed 2: a: filled up by a concurrent claim; b: filled up by a concurrent claim"
    )
    assert selection.report()[-1]["filter"] == "claim"


def test_retry_skips_the_hosts_tried_before(conf):
    retried = RequestSpec(instance="web", vcpus=1, memory_mb=1, disk_gb=1, tried_hosts={"a"})
    selection = chooser(conf).select([host("a"), host("b")], retried)
    assert names(selection) == ["b"]
    assert selection.report()[0] == {
        "filter": "retry",
        "removed": 1,
        "reasons": ["a: already tried for this build"],
    }


# --- configuration -------------------------------------------------------------


def test_filters_run_in_the_configured_order(conf):
    conf.set_override("enabled_filters", ["ram", "compute"], "scheduler")
    selection = chooser(conf).select([host("off-and-small", enabled=False, memory_mb=1)], NEED)
    assert [type(f) for f in chooser(conf).filters] == [ram.RamFilter, compute.ComputeFilter]
    assert selection.report() == [
        {"filter": "ram", "removed": 1, "reasons": ["off-and-small: needs 1024 MiB RAM, -511 free"]}
    ]


def test_an_unknown_filter_name_is_a_config_error_naming_what_exists(conf):
    conf.set_override("enabled_filters", ["compute", "ramm"], "scheduler")
    with pytest.raises(exception.InvalidConfig) as info:
        chooser(conf)
    message = str(info.value)
    assert "[scheduler] enabled_filters: no plugin named 'ramm'" in message
    assert placement.FILTER_NAMESPACE in message and "compute, cpu, disk" in message


def test_a_repeated_weigher_is_a_config_error(conf):
    conf.set_override("weighers", ["ram", "ram"], "scheduler")
    with pytest.raises(exception.InvalidConfig, match="weighers names 'ram' twice"):
        chooser(conf)


def test_a_plugin_of_the_wrong_family_is_a_config_error(conf):
    conf.set_override("weighers", ["ram"], "scheduler")
    wrong = extensions([ram.RamFilter], placement.WEIGHER_NAMESPACE)
    with pytest.raises(exception.InvalidConfig, match="plugin 'ram' is not a BaseHostWeigher"):
        placement.Placement(conf, extensions(FILTERS, placement.FILTER_NAMESPACE), wrong)


def test_installed_namespaces_are_used_by_default(conf, monkeypatch):
    seen = []

    def fake_extensions(namespace: str) -> ExtensionManager:
        seen.append(namespace)
        return extensions(
            FILTERS if namespace == placement.FILTER_NAMESPACE else WEIGHERS, namespace
        )

    monkeypatch.setattr(placement, "_extensions", fake_extensions)
    loaded = placement.Placement(conf)
    assert seen == [placement.FILTER_NAMESPACE, placement.WEIGHER_NAMESPACE]
    assert [f.name for f in loaded.filters] == scheduler_opts.DEFAULT_FILTERS
    assert [w.name for w in loaded.weighers] == scheduler_opts.DEFAULT_WEIGHERS


# --- per-host server counts ----------------------------------------------------


def test_servers_are_counted_only_when_a_filter_needs_it(conf):
    def list_instances() -> list[dict[str, Any]]:
        raise AssertionError("read every server although no filter needs the counts")

    assert names(chooser(conf).select([host("a")], NEED, list_instances)) == ["a"]


def test_num_instances_counts_each_hosts_servers_once(conf):
    conf.set_override("enabled_filters", ["num_instances"], "scheduler")
    conf.set_override("max_instances_per_host", 2, "scheduler")
    calls = []

    def list_instances() -> list[dict[str, Any]]:
        calls.append(1)
        return [{"host": "full"}, {"host": "full"}, {"host": "one"}, {"host": None}]

    selection = chooser(conf).select(
        [host("full"), host("one"), host("none")], NEED, list_instances
    )
    assert names(selection) == ["none", "one"]
    assert selection.report()[0]["reasons"] == ["full: has 2 servers, max_instances_per_host is 2"]
    assert calls == [1]


def test_num_instances_with_no_servers_anywhere(conf):
    conf.set_override("enabled_filters", ["num_instances"], "scheduler")
    assert names(chooser(conf).select([host("a")], NEED, lambda: [])) == ["a"]


def test_num_instances_uses_a_count_the_store_provides(conf):
    conf.set_override("enabled_filters", ["num_instances"], "scheduler")
    conf.set_override("max_instances_per_host", 1, "scheduler")

    def list_instances() -> list[dict[str, Any]]:
        raise AssertionError("the records carry num_instances")

    hosts = [host("a", num_instances=1), host("b", num_instances=0)]
    assert names(chooser(conf).select(hosts, NEED, list_instances)) == ["b"]


# --- the manager's call site ----------------------------------------------------


class FakeCompute:
    def __init__(self) -> None:
        self.builds: list[str] = []

    def build_instance(self, host: str, payload: dict[str, Any]) -> None:
        self.builds.append(host)


@pytest.fixture
def scheduler(conf, tmp_path, monkeypatch):
    from compute_driver.scheduler.catalog import Catalog
    from compute_driver.scheduler.database import Database
    from compute_driver.scheduler.service import Scheduler
    from compute_driver.scheduler.store import Store

    conf.set_override("store_path", str(tmp_path / "images"), "image")
    monkeypatch.setattr(
        placement,
        "_extensions",
        lambda ns: extensions(FILTERS if ns == placement.FILTER_NAMESPACE else WEIGHERS, ns),
    )
    store = Store(Database("sqlite:///%s" % (tmp_path / "s.sqlite")))
    store.db.upgrade()
    Catalog(store.db).create_flavor("t.place", vcpus=2, memory_mb=1024, root_gb=10)
    Catalog(store.db).create_image(
        uuid=str(uuidlib.uuid4()),
        name="cirros",
        disk_format="raw",
        path="/images/cirros/disk",
        size_bytes=1024,
        virtual_size=1024,
        checksum="0" * 64,
    )
    for name, memory_mb in (("big", 16384), ("medium", 8192), ("small", 1024)):
        store.report_host(name, {"vcpus": 4, "memory_mb": memory_mb, "disk_gb": 100}, {})
    manager = Scheduler(conf, store, FakeCompute())  # type: ignore[arg-type]
    yield manager
    conf.clear_override("store_path", "image")
    store.db.engine.dispose()


def _create(manager: Any, name: str) -> dict[str, Any]:
    # NOTE: the undecorated method: the RPC wrapper hides our errors from
    # in-process callers behind ExpectedException.
    create = type(manager.servers).create_server.__wrapped__
    return create(
        manager.servers,
        RequestContext(admin=True),
        uuid=str(uuidlib.uuid4()),
        name=name,
        flavor="t.place",
        image="cirros",
        project="demo",
    )


def test_manager_claims_the_heaviest_host_and_falls_back_when_a_claim_fails(scheduler):
    claimed = []
    real_claim = scheduler.store.claim

    def claim(host: str, *args: Any) -> bool:
        claimed.append(host)
        return host != "big" and real_claim(host, *args)  # "big" filled up meanwhile

    scheduler.store.claim = claim
    record = _create(scheduler, "web")
    assert claimed == ["big", "medium"]
    assert record["host"] == "medium" and scheduler.compute.builds == ["medium"]


def test_manager_raises_no_valid_host_with_the_per_filter_report(scheduler):
    scheduler.store.set_host_enabled("big", False, "maintenance", False, 60)
    scheduler.store.claim = lambda host, *args: False
    with pytest.raises(exception.NoValidHost) as info:
        _create(scheduler, "web")
    error = info.value
    assert error.kwargs["instance"] == "web"
    assert error.kwargs["filters"][1] == {
        "filter": "compute",
        "removed": 1,
        "reasons": ["big: disabled (maintenance)"],
    }
    assert error.kwargs["filters"][-1] == {
        "filter": "claim",
        "removed": 1,
        "reasons": ["medium: filled up by a concurrent claim"],
    }
    assert "small: needs 1024 MiB RAM, 512 free" in error.message
    server = scheduler.store.list_instances()[0]
    assert server["vm_state"] == "error" and server["fault"].startswith("No valid host: 3 host(s)")


# --- the scheduler's host view (host_view.py) ------------------------------------------


def _with_host_view_ttl(manager: Any, ttl: float) -> Any:
    """A scheduler like ``manager`` (same store and compute) whose view lasts ``ttl`` s."""
    from compute_driver.scheduler.service import Scheduler

    manager.conf.set_override("host_view_ttl", ttl, "scheduler")
    return Scheduler(manager.conf, manager.store, manager.compute)


def test_a_claim_another_scheduler_made_fails_ours_and_the_view_is_read_again(
    scheduler,
) -> None:
    scheduler = _with_host_view_ttl(scheduler, 60.0)
    _create(scheduler, "first")  # reads the view: "big" has most free RAM
    # NOTE: another scheduler fills "big" behind this one's view.
    with scheduler.store.db.session() as session:
        session.get(Host, "big").memory_mb_used = 16384
    record = _create(scheduler, "second")
    assert record["host"] == "medium"
    assert scheduler.host_view.hosts()[1] is False  # read again after the lost claim


def test_no_valid_host_is_said_only_after_a_fresh_read(scheduler) -> None:
    scheduler = _with_host_view_ttl(scheduler, 60.0)
    scheduler.host_view.hosts()
    # NOTE: hosts gone from the store behind the view: the stale view still
    # lists them, the fresh read explains the empty cloud.
    for host in ("big", "medium", "small"):
        scheduler.store.set_host_enabled(host, False, "gone", False, 60)
    with pytest.raises(exception.NoValidHost) as info:
        _create(scheduler, "web")
    assert "disabled (gone)" in info.value.message


# --- reschedule of a failed build ---------------------------------------------------


def _report_failure(manager: Any, host: str, uuid: str, fault: str) -> None:
    update = ReportEndpoint.instance_update.__wrapped__
    update(manager.reports, {}, host=host, uuid=uuid, vm_state="error", fault=fault)


def _used(manager: Any) -> dict[str, int]:
    return {h["name"]: h["memory_mb_used"] for h in manager.store.list_hosts(60)}


def test_a_failed_build_goes_to_another_host_and_ends_error_with_every_reason(scheduler):
    uuid = _create(scheduler, "web")["uuid"]
    _report_failure(scheduler, "big", uuid, "disk full")
    moved = scheduler.store.get_instance(uuid)
    assert (moved["host"], moved["task_state"]) == ("medium", "spawning")
    assert moved["attempts"] == [{"host": "big", "fault": "disk full"}]
    assert scheduler.compute.builds == ["big", "medium"]
    assert _used(scheduler) == {"big": 0, "medium": 1024, "small": 0}
    hosts = {h["name"]: h for h in scheduler.store.list_hosts(60)}
    assert hosts["big"]["failed_builds"] == 1

    # A late report from the host it left changes nothing.
    _report_failure(scheduler, "big", uuid, "late")
    assert scheduler.store.get_instance(uuid)["host"] == "medium"

    # The second failure leaves no host with room (small is too small): ERROR,
    # every attempt named, no claim held anywhere.
    _report_failure(scheduler, "medium", uuid, "qemu died")
    failed = scheduler.store.get_instance(uuid)
    assert failed["vm_state"] == "error" and failed["task_state"] is None
    assert "big: disk full" in failed["fault"] and "medium: qemu died" in failed["fault"]
    assert _used(scheduler) == {"big": 0, "medium": 0, "small": 0}


def test_max_attempts_ends_the_retries_and_a_success_resets_the_host(scheduler, conf):
    conf.set_override("max_attempts", 2, "scheduler")
    try:
        first = _create(scheduler, "web")["uuid"]
        _report_failure(scheduler, "big", first, "boom")
        _report_failure(scheduler, "medium", first, "boom again")
        failed = scheduler.store.get_instance(first)
        assert failed["vm_state"] == "error"
        assert failed["fault"].startswith("build failed on 2 host(s): big: boom; medium: boom")
        assert scheduler.compute.builds == ["big", "medium"]

        second = _create(scheduler, "web2")["uuid"]
        assert scheduler.store.get_instance(second)["host"] == "big"
        update = ReportEndpoint.instance_update.__wrapped__
        reports = scheduler.reports
        update(reports, {}, host="big", uuid=second, vm_state="active", power_state="running")
        hosts = {h["name"]: h for h in scheduler.store.list_hosts(60)}
        assert (hosts["big"]["failed_builds"], hosts["medium"]["failed_builds"]) == (0, 1)
    finally:
        conf.clear_override("max_attempts", "scheduler")
