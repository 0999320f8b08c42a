"""The scheduler's SQL store on real SQLite: seeding, idempotence, claims, deletes, lookups."""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Iterator

import pytest

from compute_driver import exception
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.store import Store

HOST = "compute-1"
#: No overcommit, 512 MiB reserved: a host of 512 + N * 128 MiB takes N m1.nano servers.
LIMITS = {"cpu_ratio": 1.0, "ram_ratio": 1.0, "disk_ratio": 1.0, "reserved_mb": 512}
NANO = {"vcpus": 1, "memory_mb": 128, "disk_gb": 1}


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    store = Store(Database("sqlite:///%s" % (tmp_path / "s.sqlite")))
    store.db.upgrade()
    yield store
    store.db.engine.dispose()


def _report(
    store: Store,
    name: str = HOST,
    vcpus: int = 64,
    memory_mb: int = 512 + 4 * 128,
    disk_gb: int = 100,
) -> None:
    store.report_host(
        name, {"vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb}, {"virt_type": "test"}
    )


def _image(store: Store, name: str = "cirros") -> dict:
    return Catalog(store.db).create_image(
        uuid=str(uuidlib.uuid4()),
        name=name,
        disk_format="raw",
        path="/images/%s/disk" % name,
        size_bytes=1024,
        virtual_size=1024,
        checksum="0" * 64,
    )


def _instance(
    store: Store,
    name: str = "web",
    image: str = "img-uuid",
    uuid: str | None = None,
    project: str = "demo",
) -> dict:
    record, created = store.create_instance(
        uuid=uuid or str(uuidlib.uuid4()),
        name=name,
        project=project,
        flavor_name="m1.nano",
        vcpus=NANO["vcpus"],
        memory_mb=NANO["memory_mb"],
        root_gb=NANO["disk_gb"],
        image_uuid=image,
        user_data=None,
    )
    assert created
    return record


def _claim(store: Store, instance_uuid: str, host: str = HOST) -> bool:
    return store.claim(
        host, NANO["vcpus"], NANO["memory_mb"], NANO["disk_gb"], LIMITS, instance_uuid
    )


def _used(store: Store, host: str = HOST) -> tuple[int, int, int]:
    record = store.get_host(host, down_after=60)
    return record["vcpus_used"], record["memory_mb_used"], record["disk_gb_used"]


# --- schema and seeding -----------------------------------------------------------


def test_upgrade_seeds_default_flavors_and_is_idempotent(store):
    store.db.upgrade()
    store.db.upgrade()
    flavors = {f["name"]: f for f in Catalog(store.db).list_flavors()}
    assert list(flavors) == ["m1.nano", "m1.tiny", "m1.small", "m1.medium", "m1.large"]
    assert flavors["m1.nano"] == {
        "name": "m1.nano",
        "vcpus": 1,
        "memory_mb": 128,
        "root_gb": 1,
        "extra_specs": {},
    }
    assert flavors["m1.large"] == {
        "name": "m1.large",
        "vcpus": 4,
        "memory_mb": 8192,
        "root_gb": 80,
        "extra_specs": {},
    }


def test_new_store_on_missing_directory_is_refused(tmp_path):
    # NOTE: a mistyped path used to start a new, empty cloud there.
    with pytest.raises(exception.InvalidConfig, match="does not exist"):
        Store(Database("sqlite:///%s" % (tmp_path / "deep" / "dir" / "s.sqlite")))
    assert not (tmp_path / "deep").exists()


def test_flavor_create_is_idempotent_and_conflicts_on_other_size(store):
    first = Catalog(store.db).create_flavor("m2.x", 2, 256, 2)
    assert Catalog(store.db).create_flavor("m2.x", 2, 256, 2) == first
    with pytest.raises(exception.DuplicateName):
        Catalog(store.db).create_flavor("m2.x", 4, 256, 2)
    Catalog(store.db).delete_flavor("m2.x")
    with pytest.raises(exception.FlavorNotFound):
        Catalog(store.db).get_flavor("m2.x")
    with pytest.raises(exception.FlavorNotFound):
        Catalog(store.db).delete_flavor("m2.x")


# --- instances -----------------------------------------------------------------------


def test_create_instance_is_idempotent_by_uuid(store):
    first = _instance(store, name="web")
    again, created = store.create_instance(
        uuid=first["uuid"],
        name="other-name",
        project="other",
        flavor_name="m1.large",
        vcpus=4,
        memory_mb=8192,
        root_gb=80,
        image_uuid="x",
        user_data=None,
    )
    assert created is False
    assert again == first
    assert len(store.list_instances()) == 1
    assert first["vm_state"] == "building"
    assert first["task_state"] == "scheduling"


def test_claim_until_full_then_refuse_without_change(store):
    _report(store)  # room for 4
    servers = [_instance(store, name="web-%d" % i) for i in range(5)]
    for server in servers[:4]:
        assert _claim(store, server["uuid"])
    assert _used(store) == (4, 512, 4)
    assert _claim(store, servers[4]["uuid"]) is False
    assert _used(store) == (4, 512, 4)
    refused = store.get_instance(servers[4]["uuid"])
    assert refused["host"] is None
    placed = store.get_instance(servers[0]["uuid"])
    assert (placed["host"], placed["task_state"]) == (HOST, "spawning")


@pytest.mark.parametrize(
    ("resources", "limits"),
    [
        ({"vcpus": 1}, {}),
        ({"disk_gb": 1}, {}),
        ({}, {"reserved_mb": 512 + 4 * 128}),
    ],
)
def test_claim_refused_on_any_exhausted_resource(store, resources, limits):
    _report(store, **resources)
    first, second = _instance(store), _instance(store)
    assert store.claim(HOST, 1, 128, 1, dict(LIMITS, **limits), first["uuid"]) is not bool(limits)
    before = _used(store)
    assert store.claim(HOST, 1, 128, 1, dict(LIMITS, **limits), second["uuid"]) is False
    assert _used(store) == before


def test_claim_on_unknown_host_is_refused(store):
    assert _claim(store, _instance(store)["uuid"], host="nowhere") is False


@pytest.mark.parametrize("capacity", [1, 3, 5])
def test_concurrent_claims_never_overcommit(tmp_path, capacity):
    store = Store(Database("sqlite:///%s" % (tmp_path / "s.sqlite")))
    store.db.upgrade()
    _report(store, memory_mb=512 + capacity * 128)
    servers = [_instance(store, name="web-%d" % i) for i in range(8)]
    start = threading.Barrier(len(servers))
    results: dict[str, bool | BaseException] = {}

    def claim(server_uuid: str) -> None:
        # NOTE: one Store per thread, as separate scheduler processes would have.
        mine = Store(Database(store.db.url))
        start.wait()
        try:
            results[server_uuid] = _claim(mine, server_uuid)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[server_uuid] = exc
        finally:
            mine.db.engine.dispose()

    threads = [threading.Thread(target=claim, args=(s["uuid"],)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(isinstance(r, bool) for r in results.values()), results
    assert sum(results.values()) == capacity
    assert _used(store) == (capacity, capacity * 128, capacity)
    placed = [s for s in store.list_instances() if s["host"] == HOST]
    assert sorted(s["uuid"] for s in placed) == sorted(u for u, ok in results.items() if ok)
    store.db.engine.dispose()


def test_fail_instance_releases_the_claim_once(store):
    _report(store)
    server = _instance(store)
    assert _claim(store, server["uuid"])
    store.fail_instance(server["uuid"], "boom")
    assert _used(store) == (0, 0, 0)
    store.fail_instance(server["uuid"], "boom again")
    assert _used(store) == (0, 0, 0)
    failed = store.get_instance(server["uuid"])
    assert (failed["vm_state"], failed["task_state"], failed["host"]) == ("error", None, HOST)
    assert failed["fault"] == "boom again"

    record, needs_agent = store.begin_delete(server["uuid"])
    assert needs_agent  # the agent may hold debris
    assert record["task_state"] == "deleting"
    assert store.finish_delete(server["uuid"], HOST)
    assert _used(store) == (0, 0, 0)
    assert store.finish_delete(server["uuid"], HOST) is False
    assert _used(store) == (0, 0, 0)


def test_fault_is_cut_to_the_column(store):
    server = _instance(store)
    store.fail_instance(server["uuid"], "x" * 5000)
    assert len(store.get_instance(server["uuid"])["fault"]) == 1024


def test_delete_of_a_placed_server_releases_once(store):
    _report(store)
    server = _instance(store)
    assert _claim(store, server["uuid"])
    assert store.begin_delete(server["uuid"])[1] is True
    assert store.finish_delete(server["uuid"], "another-host") is False
    assert _used(store) == (1, 128, 1)
    assert store.finish_delete(server["uuid"], HOST) is True
    assert _used(store) == (0, 0, 0)
    record, needs_agent = store.begin_delete(server["uuid"])
    assert (record["vm_state"], needs_agent) == ("deleted", False)
    assert _used(store) == (0, 0, 0)
    with pytest.raises(exception.InstanceNotFound):
        store.get_instance(server["uuid"])
    assert store.get_instance(server["uuid"], include_deleted=True)["vm_state"] == "deleted"


def test_delete_of_an_unplaced_server_is_immediate(store):
    server = _instance(store)
    store.fail_instance(server["uuid"], "No valid host")
    record, needs_agent = store.begin_delete(server["uuid"])
    assert needs_agent is False
    assert record["vm_state"] == "deleted"
    assert store.is_deleted(server["uuid"])


def test_error_server_reported_active_then_deleted_does_not_release_twice(store):
    _report(store)
    server = _instance(store)
    assert _claim(store, server["uuid"])
    store.fail_instance(server["uuid"], "cannot reach the agent")
    # What ReportEndpoint.instance_update does when the agent reports the build after all.
    store.update_instance(
        server["uuid"],
        expected_host=HOST,
        vm_state="active",
        task_state=None,
        fault=None,
        power_state="running",
    )
    store.begin_delete(server["uuid"])
    store.finish_delete(server["uuid"], HOST)
    assert min(_used(store)) >= 0, _used(store)


# --- images ----------------------------------------------------------------------------


def test_delete_image_refused_while_a_live_server_uses_it(store):
    _report(store)
    image = _image(store)
    server = _instance(store, name="web", image=image["uuid"])
    with pytest.raises(exception.InUse) as exc:
        Catalog(store.db).delete_image(image["name"])
    assert "web" in exc.value.message
    assert Catalog(store.db).get_image(image["uuid"])["name"] == image["name"]

    store.begin_delete(server["uuid"])  # never placed: deleted at once
    gone = Catalog(store.db).delete_image(image["name"])
    assert gone["uuid"] == image["uuid"]
    with pytest.raises(exception.ImageNotFound):
        Catalog(store.db).get_image(image["uuid"])


def test_delete_image_allowed_after_agent_finished_delete(store):
    _report(store)
    image = _image(store)
    server = _instance(store, image=image["uuid"])
    assert _claim(store, server["uuid"])
    store.begin_delete(server["uuid"])
    with pytest.raises(exception.InUse):
        Catalog(store.db).delete_image(image["uuid"])  # still deleting
    store.finish_delete(server["uuid"], HOST)
    assert Catalog(store.db).delete_image(image["uuid"])["uuid"] == image["uuid"]


def test_created_image_record_is_what_show_returns(store):
    image = _image(store)
    assert image["created_at"] is not None
    assert Catalog(store.db).get_image(image["uuid"]) == image


def test_image_names_are_unique(store):
    _image(store, "cirros")
    with pytest.raises(exception.DuplicateName):
        _image(store, "cirros")
    assert Catalog(store.db).find_image_by_name("cirros")["name"] == "cirros"
    assert Catalog(store.db).find_image_by_name("nope") is None


# --- lookups -------------------------------------------------------------------------------


def test_name_lookup_finds_the_one_live_server(store):
    old = _instance(store, name="web")
    store.begin_delete(old["uuid"])
    live = _instance(store, name="web")
    assert store.get_instance("web")["uuid"] == live["uuid"]
    assert store.get_instance(live["uuid"])["uuid"] == live["uuid"]


def test_ambiguous_name_is_a_conflict(store):
    first = _instance(store, name="web")
    _instance(store, name="web", project="other")
    with pytest.raises(exception.Conflict) as exc:
        store.get_instance("web")
    assert exc.value.kind == "conflict"
    assert "use a UUID" in exc.value.message
    with pytest.raises(exception.Conflict):
        store.begin_delete("web")
    assert store.get_instance(first["uuid"])["name"] == "web"  # a UUID is never ambiguous


def test_unknown_names_are_not_found(store):
    with pytest.raises(exception.InstanceNotFound):
        store.get_instance("nope")
    with pytest.raises(exception.HostNotFound):
        store.get_host("nope", down_after=60)
    with pytest.raises(exception.ImageNotFound):
        Catalog(store.db).delete_image("nope")


def test_list_instances_filters(store):
    _report(store)
    a = _instance(store, name="a", project="p1")
    _instance(store, name="b", project="p2")
    assert _claim(store, a["uuid"])
    assert [s["name"] for s in store.list_instances(project="p1")] == ["a"]
    assert [s["name"] for s in store.list_instances(host=HOST)] == ["a"]
    assert len(store.list_instances()) == 2


def test_a_listed_server_reads_as_it_does_alone(store):
    # Listings build records from rows by position, a single read from the
    # ORM object by attribute: both must give the same record.
    _report(store)
    record, _ = store.create_instance(
        uuid=str(uuidlib.uuid4()),
        name="odd",
        project="p9",
        flavor_name="m1.odd",
        vcpus=3,
        memory_mb=96,
        root_gb=2,
        extra_specs={"hw:cpu_cores": "3"},
        image_uuid="img-9",
        root_backend="nfs",
        root_clone="full",
        availability_zone="az9",
        group_uuid="g-9",
    )
    assert _claim(store, record["uuid"])
    assert store.requeue_failed_build(record["uuid"], HOST, "disk full", max_attempts=3)
    assert _claim(store, record["uuid"])
    store.report_state(record["uuid"], HOST, "active", "slow", "running")
    [listed] = store.list_instances(project="p9")
    alone = store.get_instance(record["uuid"])
    assert listed == alone
    assert alone["attempts"] == [{"host": HOST, "fault": "disk full"}]
    assert (alone["flavor"], alone["image"], alone["group"]) == ("m1.odd", "img-9", "g-9")
    assert (alone["root_backend"], alone["root_clone"], alone["fault"]) == ("nfs", "full", "slow")
    assert (alone["vm_state"], alone["power_state"], alone["host"]) == ("active", "running", HOST)


def test_power_states_only_for_servers_on_that_host(store):
    _report(store)
    here, elsewhere = _instance(store), _instance(store)
    assert _claim(store, here["uuid"])
    store.set_power_states(HOST, {here["uuid"]: "running", elsewhere["uuid"]: "running"})
    assert store.get_instance(here["uuid"])["power_state"] == "running"
    assert store.get_instance(elsewhere["uuid"])["power_state"] == "nostate"


def test_host_report_and_state(store):
    _report(store)
    host = store.get_host(HOST, down_after=60)
    assert host["state"] == "up"
    assert host["enabled"] is True
    assert host["capabilities"] == {"virt_type": "test"}
    assert store.get_host(HOST, down_after=-1)["state"] == "down"
    assert [h["name"] for h in store.list_hosts(60)] == [HOST]


def test_flavor_extra_specs_and_image_properties_round_trip(store):
    store.db.upgrade()
    flavor = Catalog(store.db).create_flavor("pinned", 2, 512, 1, {"hw:cpu_policy": "dedicated"})
    assert flavor["extra_specs"] == {"hw:cpu_policy": "dedicated"}
    assert (
        Catalog(store.db).create_flavor("pinned", 2, 512, 1, {"hw:cpu_policy": "dedicated"})
        == flavor
    )
    with pytest.raises(exception.DuplicateName):
        Catalog(store.db).create_flavor("pinned", 2, 512, 1, {"hw:cpu_policy": "shared"})


def _reported_host(store, name="h1"):
    store.db.upgrade()
    store.report_host(name, {"vcpus": 4, "memory_mb": 4096, "disk_gb": 40}, {})
    return name


def test_automatic_enable_never_overrides_an_operator(store):
    host = _reported_host(store)
    record = store.set_host_enabled(host, False, "maintenance", automatic=False, down_after=60)
    assert (record["enabled"], record["disabled_reason"]) == (False, "maintenance")
    record = store.set_host_enabled(host, True, "libvirt is back", automatic=True, down_after=60)
    assert (record["enabled"], record["disabled_reason"]) == (False, "maintenance")
    record = store.set_host_enabled(host, True, None, automatic=False, down_after=60)
    assert record["enabled"] is True


def test_automatic_disable_is_lifted_automatically(store):
    host = _reported_host(store)
    record = store.set_host_enabled(host, False, "hypervisor: gone", automatic=True, down_after=60)
    assert record["enabled"] is False and record["disabled_reason"].startswith("AUTO: ")
    record = store.set_host_enabled(host, True, "back", automatic=True, down_after=60)
    assert record["enabled"] is True and record["disabled_reason"] is None


def test_power_change_is_ignored_while_a_task_is_in_flight(store):
    host = _reported_host(store)
    image = _image(store)
    UUID = str(uuidlib.uuid4())
    store.create_instance(
        uuid=UUID,
        name="vm",
        project="p",
        flavor_name="f",
        vcpus=1,
        memory_mb=128,
        root_gb=1,
        image_uuid=image["uuid"],
        user_data=None,
    )
    assert store.claim(host, 1, 128, 1, LIMITS, UUID)
    store.update_instance(UUID, vm_state="active", task_state=None, power_state="running")
    assert store.power_changed(UUID, host, "shutdown", "stopped") is True
    assert store.get_instance(UUID)["vm_state"] == "stopped"
    assert store.power_changed(UUID, host, "shutdown", "stopped") is False  # nothing new
    store.begin_task(UUID, frozenset({"stopped"}), "powering-on")
    assert store.power_changed(UUID, host, "running", "active") is False
    assert store.get_instance(UUID)["task_state"] == "powering-on"


def test_two_releases_racing_on_stale_rows_give_the_claim_back_once(store):
    """A failure report and a delete, each holding a row read before the other wrote."""
    from compute_driver.scheduler.models import Instance

    _report(store)
    server = _instance(store)
    assert _claim(store, server["uuid"])
    claimed = _used(store)
    with store.db.session() as first:
        stale_a = first.get(Instance, server["uuid"])
        with store.db.session() as second:
            stale_b = second.get(Instance, server["uuid"])
            Store._release(second, stale_b)
        Store._release(first, stale_a)
    assert _used(store) == tuple(c - n for c, n in zip(claimed, NANO.values(), strict=True))
    # And later releases (a delete after an ERROR) change nothing more.
    store.fail_instance(server["uuid"], "boom")
    assert _used(store) == tuple(c - n for c, n in zip(claimed, NANO.values(), strict=True))
