"""Aggregates, availability zones and server groups: records on real SQLite,
the filters and weigher, and placement through the wired scheduler."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import oslo_messaging as messaging
import pytest
from oslo_config import cfg

from compute_driver import exception
from compute_driver.scheduler.aggregates import AggregateManager
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.filters.aggregate_extra_specs import (
    AggregateInstanceExtraSpecsFilter,
)
from compute_driver.scheduler.filters.availability_zone import AvailabilityZoneFilter
from compute_driver.scheduler.filters.server_group import (
    ServerGroupAffinityFilter,
    ServerGroupAntiAffinityFilter,
)
from compute_driver.scheduler.placement import HostState, RequestSpec
from compute_driver.scheduler.store import Store
from compute_driver.scheduler.weighers.soft_affinity import SoftAffinityWeigher

HOSTS = ("h1", "h2", "h3")


def call(endpoint: Any, method: str, **payload: Any) -> Any:
    """Call an endpoint method as the RPC server does; raise the typed error it carries."""
    try:
        return getattr(endpoint, method)({"admin": True}, **payload)
    except messaging.ExpectedException as wrapped:
        raise wrapped.__cause__ from None  # type: ignore[misc]


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    store = Store(Database("sqlite:///%s" % (tmp_path / "s.sqlite")))
    store.db.upgrade()
    for name in HOSTS:
        store.report_host(name, {"vcpus": 8, "memory_mb": 8192, "disk_gb": 100}, {})
    yield store
    store.db.engine.dispose()


@pytest.fixture
def aggregates(store: Store, fresh_conf: cfg.ConfigOpts) -> AggregateManager:
    return AggregateManager(fresh_conf, store.db)


def _host(name: str, zone: str = "default", **props: frozenset[str]) -> HostState:
    return HostState(
        name=name,
        up=True,
        enabled=True,
        disabled_reason=None,
        reported_at=None,
        vcpus=8,
        vcpus_used=0,
        memory_mb=8192,
        memory_mb_used=0,
        disk_gb=100,
        disk_gb_used=0,
        availability_zone=zone,
        aggregate_properties=props,
    )


def _request(**fields: Any) -> RequestSpec:
    return RequestSpec(instance="web", vcpus=1, memory_mb=128, disk_gb=1, **fields)


def test_zones_and_properties_come_from_aggregates(aggregates: AggregateManager) -> None:
    call(aggregates, "create_aggregate", name="rack1", availability_zone="az1")
    call(aggregates, "create_aggregate", name="fast")
    call(aggregates, "add_aggregate_host", aggregate="rack1", host="h1")
    call(aggregates, "add_aggregate_host", aggregate="fast", host="h1")
    call(aggregates, "add_aggregate_host", aggregate="fast", host="h2")
    shown = call(aggregates, "set_aggregate", aggregate="fast", properties={"ssd": "true"})
    assert shown["hosts"] == ["h1", "h2"] and shown["properties"] == {"ssd": "true"}
    annotated = {h["name"]: h for h in aggregates.annotate([{"name": n} for n in HOSTS])}
    assert annotated["h1"]["availability_zone"] == "az1"
    assert annotated["h2"]["availability_zone"] == "default"
    assert annotated["h2"]["aggregate_properties"] == {"ssd": frozenset({"true"})}
    assert annotated["h3"]["aggregate_properties"] == {}
    aggregates.check_zone("az1")
    with pytest.raises(exception.NotFound):
        aggregates.check_zone("nowhere")
    # A host is in one zone only.
    call(aggregates, "create_aggregate", name="rack2", availability_zone="az2")
    with pytest.raises(exception.Conflict, match="one zone"):
        call(aggregates, "add_aggregate_host", aggregate="rack2", host="h1")
    with pytest.raises(exception.HostNotFound):
        call(aggregates, "add_aggregate_host", aggregate="rack2", host="nope")
    with pytest.raises(exception.DuplicateName):
        call(aggregates, "create_aggregate", name="fast")
    # An empty value removes a property.
    assert (
        call(aggregates, "set_aggregate", aggregate="fast", properties={"ssd": ""})["properties"]
        == {}
    )


def test_zone_and_aggregate_filters_say_why() -> None:
    zone = AvailabilityZoneFilter(cfg.ConfigOpts())
    assert zone.why_not(_host("h1", "az1"), _request(availability_zone="az1")) is None
    assert zone.why_not(_host("h2"), _request(availability_zone="az1")) == (
        "in zone default, not az1"
    )
    assert zone.why_not(_host("h2"), _request()) is None
    specs = AggregateInstanceExtraSpecsFilter(cfg.ConfigOpts())
    wants_ssd = _request(extra_specs={"aggregate_instance_extra_specs:ssd": "true"})
    assert specs.why_not(_host("h1", ssd=frozenset({"true"})), wants_ssd) is None
    assert specs.why_not(_host("h2"), wants_ssd) == "its aggregates give ssd=(nothing), not true"


def test_group_filters_and_the_soft_weigher() -> None:
    conf = cfg.ConfigOpts()
    affinity = ServerGroupAffinityFilter(conf)
    anti = ServerGroupAntiAffinityFilter(conf)
    members = {"h1": 2}
    assert affinity.why_not(_host("h2"), _request(group_policy="affinity")) is None  # first member
    assert affinity.why_not(_host("h2"), _request(group_policy="affinity", group_hosts=members))
    assert (
        affinity.why_not(_host("h1"), _request(group_policy="affinity", group_hosts=members))
        is None
    )
    assert anti.why_not(_host("h1"), _request(group_policy="anti-affinity", group_hosts=members))
    assert (
        anti.why_not(_host("h2"), _request(group_policy="anti-affinity", group_hosts=members))
        is None
    )
    assert (
        anti.why_not(_host("h1"), _request(group_policy="soft-anti-affinity", group_hosts=members))
        is None
    )
    conf.register_opts(
        [cfg.FloatOpt("soft_affinity_weight_multiplier", default=1.0)], group="scheduler"
    )
    weigher = SoftAffinityWeigher(conf)
    soft = _request(group_policy="soft-anti-affinity", group_hosts=members)
    assert weigher.weigh(_host("h1"), soft) < weigher.weigh(_host("h2"), soft)
    together = _request(group_policy="soft-affinity", group_hosts=members)
    assert weigher.weigh(_host("h1"), together) > weigher.weigh(_host("h2"), together)


def test_groups_belong_to_a_project_and_cannot_be_deleted_with_members(
    aggregates: AggregateManager, store: Store
) -> None:
    group = call(
        aggregates,
        "create_server_group",
        uuid=str(uuidlib.uuid4()),
        name="web",
        policy="anti-affinity",
        project="demo",
    )
    with pytest.raises(exception.ProjectMismatch):
        aggregates.group_for("web", "other")
    uuid = str(uuidlib.uuid4())
    store.create_instance(
        uuid=uuid,
        name="w1",
        project="demo",
        flavor_name="m1.nano",
        vcpus=1,
        memory_mb=128,
        root_gb=1,
        image_uuid=str(uuidlib.uuid4()),
        group_uuid=group["uuid"],
    )
    store.update_instance(uuid, host="h1")
    shown = call(aggregates, "show_server_group", group="web")
    assert shown["members"] == [uuid] and shown["hosts"] == {"h1": 1}
    assert aggregates.members_on(group["uuid"], "h1", other_than="x") == 1
    assert aggregates.members_on(group["uuid"], "h1", other_than=uuid) == 0
    with pytest.raises(exception.InUse):
        call(aggregates, "delete_server_group", group="web")


class FakeCompute:
    """Accepts builds (the scheduler's side is what is tested here)."""

    def __init__(self) -> None:
        self.builds: list[str] = []

    def build_instance(self, host: str, payload: dict[str, Any]) -> None:
        self.builds.append(host)


def test_placement_honours_zones_aggregate_specs_and_groups(
    store: Store, fresh_conf: cfg.ConfigOpts, tmp_path
) -> None:
    from compute_driver.scheduler.service import Scheduler

    fresh_conf.set_override("store_path", str(tmp_path / "images"), "image")
    fresh_conf.set_override("enabled", False, "notifications")
    Catalog(store.db).create_flavor("t.one", vcpus=1, memory_mb=256, root_gb=1)
    Catalog(store.db).create_flavor(
        "t.ssd",
        vcpus=1,
        memory_mb=256,
        root_gb=1,
        extra_specs={"aggregate_instance_extra_specs:ssd": "true"},
    )
    Catalog(store.db).create_image(
        uuid=str(uuidlib.uuid4()),
        name="img",
        disk_format="raw",
        path="/images/img",
        size_bytes=1,
        virtual_size=1,
        checksum="0" * 64,
    )
    manager = Scheduler(fresh_conf, store, FakeCompute())  # type: ignore[arg-type]
    agg = manager.aggregates
    call(agg, "create_aggregate", name="rack1", availability_zone="az1")
    call(agg, "add_aggregate_host", aggregate="rack1", host="h3")
    call(agg, "create_aggregate", name="fast")
    call(agg, "add_aggregate_host", aggregate="fast", host="h2")
    call(agg, "set_aggregate", aggregate="fast", properties={"ssd": "true"})

    def create(name: str, flavor: str = "t.one", **extra: Any) -> dict[str, Any]:
        return call(
            manager.servers,
            "create_server",
            uuid=str(uuidlib.uuid4()),
            name=name,
            flavor=flavor,
            image="img",
            project="demo",
            **extra,
        )

    assert create("z", availability_zone="az1")["host"] == "h3"
    assert create("s", flavor="t.ssd")["host"] == "h2"
    with pytest.raises(exception.NotFound):
        create("nowhere", availability_zone="az9")

    call(
        agg,
        "create_server_group",
        uuid=str(uuidlib.uuid4()),
        name="apart",
        policy="anti-affinity",
        project="demo",
    )
    hosts = {create("a%d" % i, group="apart")["host"] for i in range(3)}
    assert hosts == set(HOSTS)
    with pytest.raises(exception.NoValidHost) as info:
        create("a4", group="apart")
    assert "[server_group_anti_affinity] removed 3" in info.value.message
    call(
        agg,
        "create_server_group",
        uuid=str(uuidlib.uuid4()),
        name="together",
        policy="affinity",
        project="demo",
    )
    first = create("t1", group="together")["host"]
    assert {create("t%d" % i, group="together")["host"] for i in (2, 3)} == {first}
    shown = manager.hosts.show_host({"admin": True}, host=first)
    assert {a["name"] for a in shown["allocations"]} >= {"t1", "t2", "t3"}
