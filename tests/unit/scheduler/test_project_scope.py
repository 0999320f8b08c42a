"""The project matrix: every scheduler method x (own project, other project, admin).

On real SQLite, through the real endpoints (the decorated methods, called with
a wire context as the RPC server calls them). The agent is a stand-in that
answers like one: only the scheduler's checks are under test here (the same
reproductions against the real broker and services are in
tests/functional/test_project_scope.py).

Project ``a`` owns the objects; project ``b`` has objects of the same names
(name squatting). ``a`` names its objects by name, ``b`` and the admin by
UUID (the admin sees two of each name).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import oslo_messaging as messaging
import pytest
from oslo_config import cfg

from compute_driver import disk_image, exception
from compute_driver.rpc import policy, schemas
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.service import Scheduler
from compute_driver.scheduler.store import Store

HOST = "h1"
OWN = {"project": "a", "user": "alice"}
OTHER = {"project": "b", "user": "bob"}
ADMIN = {"admin": True, "user": "operator"}
CALLERS = {"own": OWN, "other": OTHER, "admin": ADMIN}


class StandInAgent:
    """Answers the compute API like an agent that did the work."""

    def __init__(self, store_path: str) -> None:
        self.calls: list[str] = []
        self.store_path = store_path

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def answer(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(method)
            if method == "create_volume":
                return dict(args[1], format="qcow2", location="/v/%s" % args[1]["id"], shared=False)
            if method == "attach_volume":
                return {"target_dev": "vdb"}
            if method == "resize_volume":
                return dict(args[1], size_gb=args[2])
            if method == "export_root_disk":
                # NOTE: the agent derives where it writes from the image's UUID.
                image = args[2]
                path = os.path.join(
                    disk_image.export_dir(self.store_path, image), disk_image.EXPORT_DISK
                )
                subprocess.run(
                    ["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True
                )
                return {}
            if method in ("list_instance_snapshots",):
                return []
            if method == "get_diagnostics":
                return {"cpu_time_ns": 1}
            if method == "get_console_output":
                return "login:"
            return None

        return answer


def call(manager: Scheduler, caller: dict[str, Any], method: str, **payload: Any) -> Any:
    """``method`` as the RPC server dispatches it: the endpoint that exposes it,
    a wire context; the typed error it carries is raised."""
    for endpoint in manager.endpoints:
        if hasattr(type(endpoint), method):
            try:
                return getattr(endpoint, method)(dict(caller), **payload)
            except messaging.ExpectedException as wrapped:
                raise wrapped.__cause__ from None  # type: ignore[misc]
    raise AssertionError("no endpoint has %s" % method)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A migrated database, copied for each test (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "s.sqlite"
    store = Store(Database("sqlite:///%s" % path))
    store.db.upgrade()
    store.db.engine.dispose()
    return path


@dataclasses.dataclass
class World:
    """The records of the objects project ``a`` owns (and ``b``'s namesakes)."""

    manager: Scheduler
    a: dict[str, dict[str, Any]]
    b: dict[str, dict[str, Any]]
    port: str

    def ref(self, kind: str, by: str) -> str:
        return str(self.a[kind][by])


@pytest.fixture
def world(template: Path, tmp_path: Path, fresh_conf: cfg.ConfigOpts) -> Iterator[World]:
    db = tmp_path / "s.sqlite"
    shutil.copy(template, db)
    fresh_conf.set_override("store_path", str(tmp_path / "images"), "image")
    fresh_conf.set_override("import_path", str(tmp_path / "import"), "image")
    store = Store(Database("sqlite:///%s" % db))
    store.report_host(
        HOST,
        {"vcpus": 64, "memory_mb": 65536, "disk_gb": 1000},
        {"virt_type": "qemu", "storage_backends": ["dir"], "tunnel_ip": "192.0.2.1"},
    )
    manager = Scheduler(fresh_conf, store, StandInAgent(str(tmp_path / "images")))  # type: ignore[arg-type]
    call(manager, ADMIN, "create_flavor", name="t.one", vcpus=1, memory_mb=64, root_gb=1)
    Catalog(store.db).create_image(
        uuid=str(uuidlib.uuid4()),
        name="public",
        disk_format="raw",
        path="/images/public/disk.raw",
        size_bytes=1024,
        virtual_size=1024,
        checksum="0" * 64,
    )
    owned = {p: _objects(manager, store, {"a": OWN, "b": OTHER}[p], p) for p in ("a", "b")}
    port = call(manager, OWN, "attach_interface", server="srv", network="net")["uuid"]
    manager.compute.calls.clear()  # type: ignore[attr-defined]
    yield World(manager, owned["a"], owned["b"], port)
    store.db.engine.dispose()


def _objects(
    manager: Scheduler, store: Store, caller: dict[str, Any], project: str
) -> dict[str, dict[str, Any]]:
    """One of each kind of object, made by ``caller`` with the same names in each project."""

    def create(method: str, **payload: Any) -> dict[str, Any]:
        return call(manager, caller, method, uuid=str(uuidlib.uuid4()), **payload)

    made = {
        "net": create("create_network", name="net", type="vxlan", cidr="10.0.0.0/24"),
        "freenet": create("create_network", name="freenet", type="vxlan", cidr="10.1.0.0/24"),
        "group": create("create_server_group", name="grp", policy="anti-affinity"),
        "vol": create("create_volume", name="vol", size_gb=1, backend="dir"),
        "attvol": create("create_volume", name="attvol", size_gb=1, backend="dir"),
        "bootvol": create("create_volume", name="bootvol", size_gb=1, backend="dir"),
    }
    for name in ("srv", "stopped"):
        made[name] = create("create_server", name=name, flavor="t.one", image="public")
        store.update_instance(made[name]["uuid"], vm_state="active", task_state=None)
    store.update_instance(made["stopped"]["uuid"], vm_state="stopped")
    call(manager, caller, "attach_volume", server=made["srv"]["uuid"], volume="attvol")
    made["image"] = Catalog(store.db).create_image(
        uuid=str(uuidlib.uuid4()),
        name="img-" + project,
        disk_format="raw",
        path="/images/%s/disk.raw" % project,
        size_bytes=1024,
        virtual_size=1024,
        checksum="0" * 64,
        project=project,
    )
    return {k: {"uuid": v["uuid"], "name": v["name"]} for k, v in made.items()}


# --- the matrix -----------------------------------------------------------------

Payload = Callable[[World, str], dict[str, Any]]


def _new(prefix: str) -> Callable[[], dict[str, Any]]:
    return lambda: {
        "uuid": str(uuidlib.uuid4()),
        "name": "%s-%s" % (prefix, uuidlib.uuid4().hex[:8]),
    }


#: Project methods that name one of a's objects: (method, case, payload).
BY_REF: list[tuple[str, str, Payload]] = [
    ("show_server", "", lambda w, by: {"server": w.ref("srv", by)}),
    ("delete_server", "", lambda w, by: {"server": w.ref("srv", by)}),
    ("server_console_log", "", lambda w, by: {"server": w.ref("srv", by), "lines": 5}),
    ("server_action", "stop", lambda w, by: {"server": w.ref("srv", by), "action": "stop"}),
    ("server_action", "start", lambda w, by: {"server": w.ref("stopped", by), "action": "start"}),
    ("server_diagnostics", "", lambda w, by: {"server": w.ref("srv", by)}),
    ("list_server_snapshots", "", lambda w, by: {"server": w.ref("srv", by)}),
    (
        "create_server_snapshot",
        "",
        lambda w, by: {"server": w.ref("srv", by), "name": "s1"},
    ),
    (
        "revert_server_snapshot",
        "",
        lambda w, by: {"server": w.ref("srv", by), "name": "s1"},
    ),
    (
        "delete_server_snapshot",
        "",
        lambda w, by: {"server": w.ref("srv", by), "name": "s1"},
    ),
    (
        "create_image_from_server",
        "",
        lambda w, by: {**_new("stolen")(), "server": w.ref("stopped", by)},
    ),
    ("show_image", "", lambda w, by: {"image": w.ref("image", by)}),
    ("delete_image", "", lambda w, by: {"image": w.ref("image", by)}),
    ("show_volume", "", lambda w, by: {"volume": w.ref("vol", by)}),
    ("delete_volume", "", lambda w, by: {"volume": w.ref("vol", by)}),
    ("resize_volume", "", lambda w, by: {"volume": w.ref("vol", by), "size_gb": 2}),
    (
        "volume_snapshot",
        "create",
        lambda w, by: {"volume": w.ref("vol", by), "action": "create", "name": "s1"},
    ),
    ("volume_snapshot", "list", lambda w, by: {"volume": w.ref("vol", by), "action": "list"}),
    (
        "attach_volume",
        "",
        lambda w, by: {"server": w.ref("srv", by), "volume": w.ref("vol", by)},
    ),
    (
        "detach_volume",
        "",
        lambda w, by: {"server": w.ref("srv", by), "volume": w.ref("attvol", by)},
    ),
    ("show_network", "", lambda w, by: {"network": w.ref("net", by)}),
    ("delete_network", "", lambda w, by: {"network": w.ref("freenet", by)}),
    (
        "attach_interface",
        "",
        lambda w, by: {"server": w.ref("srv", by), "network": w.ref("net", by)},
    ),
    ("detach_interface", "", lambda w, by: {"server": w.ref("srv", by), "port": w.port}),
    ("list_interfaces", "", lambda w, by: {"server": w.ref("srv", by)}),
    ("show_server_group", "", lambda w, by: {"group": w.ref("group", by)}),
    ("delete_server_group", "", lambda w, by: {"group": w.ref("group", by)}),
    (
        "create_server",
        "image",
        lambda w, by: {**_new("x")(), "flavor": "t.one", "image": w.ref("image", by)},
    ),
    (
        "create_server",
        "network",
        lambda w, by: {
            **_new("x")(),
            "flavor": "t.one",
            "image": "public",
            "networks": [w.ref("net", by)],
        },
    ),
    (
        "create_server",
        "boot_volume",
        lambda w, by: {
            **_new("x")(),
            "flavor": "t.one",
            "image": "public",
            "boot_volume": w.ref("bootvol", by),
        },
    ),
    (
        "create_server",
        "group",
        lambda w, by: {
            **_new("x")(),
            "flavor": "t.one",
            "image": "public",
            "group": w.ref("group", by),
        },
    ),
    (
        "create_volume",
        "image",
        lambda w, by: {**_new("v")(), "size_gb": 1, "backend": "dir", "image": w.ref("image", by)},
    ),
]

#: Listings: (method, the kinds of a's objects it lists).
LISTS: list[tuple[str, tuple[str, ...]]] = [
    ("list_servers", ("srv", "stopped")),
    ("list_volumes", ("vol", "attvol", "bootvol")),
    ("list_networks", ("net", "freenet")),
    ("list_server_groups", ("group",)),
    ("list_images", ("image",)),
]

#: Creates of a new object (its owner is the caller's project).
CREATES: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    ("create_server", lambda: {**_new("n")(), "flavor": "t.one", "image": "public"}),
    ("create_volume", lambda: {**_new("n")(), "size_gb": 1, "backend": "dir"}),
    (
        "create_network",
        lambda: {**_new("n")(), "type": "vxlan", "cidr": "10.9.0.0/24"},
    ),
    ("create_server_group", lambda: {**_new("n")(), "policy": "affinity"}),
]

#: Admin methods, with a payload that works for an admin.
ADMIN_ONLY: list[tuple[str, str, Callable[[Path], dict[str, Any]]]] = [
    ("list_hosts", "", lambda tmp: {}),
    ("show_host", "", lambda tmp: {"host": HOST}),
    ("set_host_enabled", "", lambda tmp: {"host": HOST, "enabled": False, "reason": "x"}),
    ("create_flavor", "", lambda tmp: {"name": "t.two", "vcpus": 1, "memory_mb": 64, "root_gb": 1}),
    ("delete_flavor", "", lambda tmp: {"flavor": "t.one"}),
    ("import_image", "", lambda tmp: {**_new("i")(), "file": _raw_disk(tmp)}),
    ("create_aggregate", "", lambda tmp: {"name": "agg2"}),
    ("set_aggregate", "", lambda tmp: {"aggregate": "agg", "properties": {"ssd": "1"}}),
    ("add_aggregate_host", "", lambda tmp: {"aggregate": "agg", "host": HOST}),
    ("remove_aggregate_host", "", lambda tmp: {"aggregate": "agg", "host": HOST}),
    ("list_aggregates", "", lambda tmp: {}),
    ("show_aggregate", "", lambda tmp: {"aggregate": "agg"}),
    ("delete_aggregate", "", lambda tmp: {"aggregate": "agg"}),
]

#: Methods any caller may use.
EVERYONE: list[tuple[str, dict[str, Any]]] = [("ping", {}), ("list_flavors", {})]


def _raw_disk(tmp: Path) -> str:
    """A raw disk in the import directory, by the name import_image takes."""
    (tmp / "import").mkdir(mode=0o700, exist_ok=True)
    (tmp / "import" / "import.raw").write_bytes(b"\0" * 4096)
    return "import.raw"


def _id(case: tuple) -> str:
    return "-".join(part for part in case[:2] if isinstance(part, str) and part)


def test_the_matrix_covers_every_scheduler_method() -> None:
    covered = (
        {m for m, _, _ in BY_REF}
        | {m for m, _ in LISTS}
        | {m for m, _ in CREATES}
        | {m for m, _, _ in ADMIN_ONLY}
        | {m for m, _ in EVERYONE}
    )
    caller_methods = set(schemas.SCHEDULER_METHODS)
    assert caller_methods - covered == set()
    assert {m for m, _, _ in ADMIN_ONLY} == set(policy.ADMIN)


def _everything(world: World) -> list[Any]:
    """Every record, as an admin lists them."""
    return [
        call(world.manager, ADMIN, method)
        for method in (*(m for m, _ in LISTS), "list_flavors", "list_hosts")
    ]


def _swap(value: Any, mapping: dict[str, str]) -> Any:
    text = json.dumps(value)
    for old, new in mapping.items():
        text = text.replace(old, new)
    return json.loads(text)


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("case", BY_REF, ids=_id)
def test_by_reference(world: World, caller: str, case: tuple) -> None:
    method, _, payload_of = case
    payload = payload_of(world, "name" if caller == "own" else "uuid")
    if caller == "admin" and method in {m for m, _ in CREATES}:
        payload["project"] = "a"  # an admin of no project names the owner
    if caller != "other":
        # NOTE: the owner (by name, with b's namesakes about) and the admin
        # (by UUID) get past the scope; the stand-in agent does the rest.
        call(world.manager, CALLERS[caller], method, **payload)
        return
    before = _everything(world)
    with pytest.raises(exception.NotFound) as refused:
        call(world.manager, OTHER, method, **payload)
    assert _everything(world) == before, "a refused call changed something"
    assert world.manager.compute.calls == []  # type: ignore[attr-defined]
    # Exactly what a reference that never existed gets.
    fresh = {v["uuid"]: str(uuidlib.uuid4()) for v in world.a.values()}
    if "uuid" in payload:
        fresh[payload["uuid"]] = str(uuidlib.uuid4())  # a create: not a repeat
    with pytest.raises(exception.NotFound) as missing:
        call(world.manager, OTHER, method, **_swap(payload, fresh))
    back = {new: old for old, new in fresh.items()}
    assert (refused.value.code, refused.value.message) == (
        missing.value.code,
        _swap(missing.value.message, back),
    )


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("case", LISTS, ids=lambda c: c[0])
def test_listings(world: World, caller: str, case: tuple) -> None:
    method, kinds = case
    mine = {world.a[k]["uuid"] for k in kinds}
    theirs = {world.b[k]["uuid"] for k in kinds}
    listed = {r["uuid"] for r in call(world.manager, CALLERS[caller], method)}
    if caller == "own":
        assert mine <= listed and not listed & theirs
    elif caller == "other":
        assert theirs <= listed and not listed & mine
    else:
        assert mine | theirs <= listed
        if method != "list_images":
            only_a = call(world.manager, ADMIN, method, project="a")
            assert {r["uuid"] for r in only_a} == mine
    if method != "list_images":
        for filters in ({"project": "a"}, {"all_projects": True}):
            if caller == "other":
                with pytest.raises(exception.Forbidden):
                    call(world.manager, OTHER, method, **filters)


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("case", CREATES, ids=lambda c: c[0])
def test_creates_belong_to_the_callers_project(world: World, caller: str, case: tuple) -> None:
    method, payload_of = case
    if caller == "admin":
        made = call(world.manager, ADMIN, method, project="c", **payload_of())
        assert made["project"] == "c"
        with pytest.raises(exception.InvalidPayload):
            call(world.manager, ADMIN, method, **payload_of())  # an admin of no project
        return
    context = CALLERS[caller]
    assert call(world.manager, context, method, **payload_of())["project"] == context["project"]
    # The old payload field: the same project is fine, another is forbidden.
    same = call(world.manager, context, method, project=context["project"], **payload_of())
    assert same["project"] == context["project"]
    other = "b" if context["project"] == "a" else "a"
    with pytest.raises(exception.Forbidden):
        call(world.manager, context, method, project=other, **payload_of())


@pytest.mark.parametrize("case", CREATES, ids=lambda c: c[0])
def test_a_repeated_create_of_another_projects_uuid_returns_nothing_of_it(
    world: World, case: tuple
) -> None:
    method, payload_of = case
    payload = payload_of()
    call(world.manager, OWN, method, **payload)
    with pytest.raises(exception.Conflict) as refused:
        call(world.manager, OTHER, method, **payload)
    assert "a" not in refused.value.kwargs


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("case", ADMIN_ONLY, ids=_id)
def test_admin_only(world: World, tmp_path: Path, caller: str, case: tuple) -> None:
    method, _, payload_of = case
    call(world.manager, ADMIN, "create_aggregate", name="agg")
    payload = payload_of(tmp_path)
    if caller == "admin":
        call(world.manager, ADMIN, method, **payload)
        return
    before = call(world.manager, ADMIN, "list_flavors"), call(world.manager, ADMIN, "list_hosts")
    with pytest.raises(exception.Forbidden):
        call(world.manager, CALLERS[caller], method, **payload)
    after = call(world.manager, ADMIN, "list_flavors"), call(world.manager, ADMIN, "list_hosts")
    assert before == after


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("case", EVERYONE, ids=lambda c: c[0])
def test_everyone(world: World, caller: str, case: tuple) -> None:
    method, payload = case
    call(world.manager, CALLERS[caller], method, **payload)


# --- beside the matrix ----------------------------------------------------------


def test_name_squatting_changes_nothing_for_the_owner(world: World) -> None:
    # b made a server srv after a did: a's srv is still a's.
    shown = call(world.manager, OWN, "show_server", server="srv")
    assert shown["uuid"] == world.a["srv"]["uuid"]
    assert call(world.manager, OTHER, "show_server", server="srv")["uuid"] == world.b["srv"]["uuid"]
    # Only a caller that sees both (an admin of no project) must use a UUID.
    with pytest.raises(exception.Conflict):
        call(world.manager, ADMIN, "show_server", server="srv")
    scoped_admin = {"admin": True, "project": "a"}
    assert call(world.manager, scoped_admin, "show_server", server="srv")["uuid"] == shown["uuid"]


def test_a_name_that_is_another_projects_uuid_finds_the_callers_own(world: World) -> None:
    uuid = world.a["srv"]["uuid"]
    with pytest.raises(exception.InstanceNotFound):
        call(world.manager, OTHER, "show_server", server=uuid)
    # b names a server after a's UUID: b finds its own, a still finds a's.
    own = call(
        world.manager,
        OTHER,
        "create_server",
        **{**_new("x")(), "name": uuid},
        flavor="t.one",
        image="public",
    )
    assert call(world.manager, OTHER, "show_server", server=uuid)["uuid"] == own["uuid"]
    assert call(world.manager, OWN, "show_server", server=uuid)["uuid"] == uuid


def test_an_image_made_from_a_server_belongs_to_its_project(world: World) -> None:
    made = call(world.manager, OWN, "create_image_from_server", **_new("tmpl")(), server="stopped")
    assert made["project"] == "a"
    assert made["uuid"] in {i["uuid"] for i in call(world.manager, OWN, "list_images")}
    assert made["uuid"] not in {i["uuid"] for i in call(world.manager, OTHER, "list_images")}
    with pytest.raises(exception.ImageNotFound):
        call(
            world.manager, OTHER, "create_server", **_new("x")(), flavor="t.one", image=made["uuid"]
        )


def test_public_images_are_everyones_and_only_an_admin_deletes_them(
    world: World, tmp_path: Path
) -> None:
    unused = call(world.manager, ADMIN, "import_image", **_new("i")(), file=_raw_disk(tmp_path))
    for caller in (OWN, OTHER):
        assert call(world.manager, caller, "show_image", image="public")["project"] is None
        with pytest.raises(exception.Forbidden):
            call(world.manager, caller, "delete_image", image=unused["uuid"])
    call(world.manager, ADMIN, "delete_image", image=unused["uuid"])


@pytest.mark.parametrize(
    "context",
    [
        {},
        {"request_id": "req-1"},
        {"project": None, "admin": False},
    ],
)
def test_a_context_of_no_project_is_refused_before_anything_is_read(
    world: World, context: dict
) -> None:
    with pytest.raises(exception.Forbidden):
        call(world.manager, context, "list_servers")
    assert call(world.manager, context, "ping")["service"] == "compute-scheduler"


@pytest.mark.parametrize(
    "context",
    [
        {"project": "a\n"},
        {"project": "../a"},
        {"project": "a" * 65},
        {"project": "a", "admin": "yes"},
        {"project": "a", "roles": ["admin"]},
        {"project": "a", "request_id": "x" * 100},
        {"project": 7},
    ],
)
def test_a_malformed_context_is_refused_in_one_line(world: World, context: dict) -> None:
    with pytest.raises(exception.InvalidContext) as refused:
        call(world.manager, context, "list_servers")
    assert "\n" not in refused.value.message and len(refused.value.message) < 120
    assert "x" * 100 not in refused.value.message


def test_a_forced_host_needs_an_admin(world: World) -> None:
    with pytest.raises(exception.Forbidden):
        call(
            world.manager,
            OWN,
            "create_server",
            **_new("x")(),
            flavor="t.one",
            image="public",
            host=HOST,
        )
    placed = call(
        world.manager,
        ADMIN,
        "create_server",
        **_new("x")(),
        flavor="t.one",
        image="public",
        host=HOST,
        project="a",
    )
    assert placed["host"] == HOST
