"""The scheduler's networks and ports on real SQLite: segments, addresses, MACs, topology."""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import oslo_messaging as messaging
import pytest
from oslo_config import cfg

from compute_driver import exception
from compute_driver.rpc import schemas
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.networks import NetworkManager
from compute_driver.scheduler.store import Store

ADMIN = RequestContext(admin=True)


class TopologyRecorder:
    """Records the update_topology casts the scheduler would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, list[str]]] = []

    def update_topology(self, host: str, network: dict, remotes: list[str]) -> None:
        self.sent.append((host, network["name"], remotes))


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    store = Store(Database("sqlite:///%s" % (tmp_path / "s.sqlite")))
    store.db.upgrade()
    for name, ip in (("h1", "192.0.2.1"), ("h2", "192.0.2.2"), ("h3", "192.0.2.3")):
        store.report_host(name, {"vcpus": 8, "memory_mb": 8192, "disk_gb": 100}, {"tunnel_ip": ip})
    yield store
    store.db.engine.dispose()


@pytest.fixture
def recorder() -> TopologyRecorder:
    return TopologyRecorder()


@pytest.fixture
def manager(store: Store, recorder: TopologyRecorder, fresh_conf: cfg.ConfigOpts) -> NetworkManager:
    return NetworkManager(fresh_conf, store, recorder)  # type: ignore[arg-type]


def call(manager: NetworkManager, method: str, **payload: Any) -> Any:
    """Call an endpoint method as the RPC server does; raise the typed error it carries."""
    try:
        return getattr(manager, method)({"admin": True}, **payload)
    except messaging.ExpectedException as wrapped:
        raise wrapped.__cause__ from None  # type: ignore[misc]


def _net(manager: NetworkManager, name: str, **extra: Any) -> dict:
    fields = {"type": "vxlan", "cidr": "10.0.0.0/24", "project": "demo"}
    fields.update(extra)
    return call(manager, "create_network", uuid=str(uuidlib.uuid4()), name=name, **fields)


def test_vnis_start_at_5000_and_the_mtu_leaves_room_for_the_tunnel(manager: NetworkManager) -> None:
    first, second = _net(manager, "a"), _net(manager, "b", type="geneve")
    assert (first["segment"], second["segment"]) == (5000, 5001)
    assert first["mtu"] == 1450 and first["gateway"] == "10.0.0.1"
    assert _net(manager, "c", type="vlan", segment=100)["mtu"] == 1500


def test_taken_or_out_of_range_segments_are_refused(manager: NetworkManager) -> None:
    _net(manager, "a", segment=6000)
    with pytest.raises(exception.SegmentInUse):
        _net(manager, "b", segment=6000)
    with pytest.raises(exception.InvalidNetwork, match="outside"):
        _net(manager, "c", segment=100)
    with pytest.raises(exception.InvalidNetwork, match="outside"):
        _net(manager, "d", type="vlan", segment=4095)
    _net(manager, "e", type="vlan", segment=7, physnet="p1")
    _net(manager, "f", type="vlan", segment=7, physnet="p2")  # per physnet
    with pytest.raises(exception.SegmentInUse):
        _net(manager, "g", type="vlan", segment=7, physnet="p1")
    _net(manager, "h", type="flat", physnet="p1")
    with pytest.raises(exception.SegmentInUse):
        _net(manager, "i", type="flat", physnet="p1")
    assert sorted(n["name"] for n in call(manager, "list_networks")) == ["a", "e", "f", "h"]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"cidr": "10.0.0.1/24"}, "host bits"),
        ({"cidr": "10.0.0.0/30"}, "/29 or larger"),
        ({"cidr": "10.0.0.0/24", "gateway": "10.0.1.1"}, "not a host address"),
        ({"cidr": "10.0.0.0/24", "gateway": "10.0.0.255"}, "not a host address"),
        ({"mtu": 1500}, "more than the underlay"),
        ({"type": "flat", "segment": 3}, "no segment"),
        ({"physnet": "p1"}, "not a physnet"),
    ],
)
def test_bad_networks_are_refused_and_nothing_is_stored(
    manager: NetworkManager, fields: dict, match: str
) -> None:
    with pytest.raises(exception.InvalidNetwork, match=match):
        _net(manager, "bad", **fields)
    assert call(manager, "list_networks") == []


def test_concurrent_ports_get_distinct_addresses_and_macs(manager: NetworkManager) -> None:
    net = _net(manager, "a", cidr="10.0.0.0/26")
    ports: list[dict] = []
    lock = threading.Lock()

    def allocate() -> None:
        got = manager.allocate(str(uuidlib.uuid4()), "demo", [net["uuid"]], ADMIN)
        with lock:
            ports.extend(got)

    threads = [threading.Thread(target=allocate) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    addresses = [p["address"] for p in ports]
    assert len(set(addresses)) == 20 and "10.0.0.1/26" not in addresses
    assert len({p["mac"] for p in ports}) == 20


def test_a_full_subnet_and_another_projects_network_are_refused(manager: NetworkManager) -> None:
    net = _net(manager, "tiny", cidr="10.0.0.0/29")  # 6 hosts, one is the gateway
    for _ in range(5):
        manager.allocate(str(uuidlib.uuid4()), "demo", ["tiny"], ADMIN)
    with pytest.raises(exception.NetworkFull):
        manager.allocate(str(uuidlib.uuid4()), "demo", ["tiny"], ADMIN)
    with pytest.raises(exception.ProjectMismatch):
        manager.allocate(str(uuidlib.uuid4()), "other", [net["uuid"]], ADMIN)


def test_topology_goes_only_to_hosts_with_ports(
    manager: NetworkManager, recorder: TopologyRecorder
) -> None:
    net = _net(manager, "a")
    _net(manager, "quiet")
    for host in ("h1", "h2"):
        instance = str(uuidlib.uuid4())
        manager.allocate(instance, "demo", ["a"], ADMIN)
        manager.networks.bind(instance, host)
    manager.fan_out([net["uuid"]])
    assert sorted(recorder.sent) == [("h1", "a", ["192.0.2.2"]), ("h2", "a", ["192.0.2.1"])]
    view = manager.host_networks("h1")
    assert [(v["network"]["name"], v["remote_endpoints"]) for v in view] == [("a", ["192.0.2.2"])]
    assert manager.host_networks("h3") == []
    with pytest.raises(exception.InUse):
        call(manager, "delete_network", network="a")
    call(manager, "delete_network", network="quiet")


def test_every_port_change_gives_the_network_a_newer_revision(
    manager: NetworkManager, recorder: TopologyRecorder
) -> None:
    net = _net(manager, "a")
    revisions = [manager.networks.get(net["uuid"])["revision"]]
    instance = str(uuidlib.uuid4())
    manager.allocate(instance, "demo", ["a"], ADMIN)
    revisions.append(manager.networks.get(net["uuid"])["revision"])
    manager.networks.bind(instance, "h1")
    revisions.append(manager.networks.get(net["uuid"])["revision"])
    manager.fan_out([net["uuid"]])
    manager.networks.release(instance)
    revisions.append(manager.networks.get(net["uuid"])["revision"])
    assert revisions == sorted(set(revisions)) and len(revisions) == 4
    assert recorder.sent == [("h1", "a", [])]


class PortAgent(TopologyRecorder):
    """Also takes attach_interface and delete_instance casts, checked as an agent checks them."""

    def attach_interface(self, host: str, uuid: str, port: dict) -> None:
        pass

    def delete_instance(self, host: str, uuid: str, ports: list[dict]) -> None:
        schema = schemas.COMPUTE_METHODS["delete_instance"]
        schemas.validate("compute", "delete_instance", schema, {"uuid": uuid, "ports": ports})


def test_a_port_beyond_the_limit_is_refused_and_a_full_server_still_deletes(
    store: Store, fresh_conf: cfg.ConfigOpts
) -> None:
    agent = PortAgent()
    manager = NetworkManager(fresh_conf, store, agent)  # type: ignore[arg-type]
    net = _net(manager, "a")
    uuid = str(uuidlib.uuid4())
    store.create_instance(
        uuid=uuid,
        name="many",
        project="demo",
        flavor_name="m1.nano",
        vcpus=1,
        memory_mb=128,
        root_gb=1,
        image_uuid=str(uuidlib.uuid4()),
    )
    store.update_instance(uuid, host="h1", vm_state="active", task_state=None)
    for _ in range(schemas.MAX_PORTS):
        call(manager, "attach_interface", server=uuid, network=net["uuid"])
    with pytest.raises(exception.PortLimitReached, match="already has 16 ports.*most allowed"):
        call(manager, "attach_interface", server=uuid, network=net["uuid"])
    assert len(manager.agent_ports(uuid)) == schemas.MAX_PORTS
    # What delete hands the agent: every port the server could get.
    agent.delete_instance("h1", uuid, manager.agent_ports(uuid))


@pytest.mark.parametrize(
    ("cidr", "match"),
    [
        ("0.0.0.0/0", "loopback|unspecified"),
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("127.0.0.0/29", "loopback"),
        ("224.0.0.0/4", "multicast"),
        ("239.1.1.0/24", "multicast"),
        ("169.254.0.0/16", "link-local"),
        ("169.254.169.0/24", "link-local"),
        ("240.0.0.0/24", "reserved"),
        ("255.255.255.248/29", "reserved"),
        ("96.0.0.0/3", "loopback"),  # wide enough to swallow a special range
    ],
)
def test_special_subnets_are_refused_and_nothing_is_stored(
    manager: NetworkManager, cidr: str, match: str
) -> None:
    with pytest.raises(exception.InvalidNetwork, match="cidr %s overlaps .*(%s)" % (cidr, match)):
        _net(manager, "bad", cidr=cidr)
    assert call(manager, "list_networks") == []


def test_subnets_overlapping_the_operators_reserved_cidrs_are_refused(
    manager: NetworkManager, fresh_conf: cfg.ConfigOpts
) -> None:
    fresh_conf.set_override("reserved_cidrs", ["10.20.0.0/16", "192.168.1.0/24"], "networks")
    for cidr in ("10.20.5.0/24", "10.0.0.0/8", "192.168.1.128/25"):
        with pytest.raises(exception.InvalidNetwork, match="reserved_cidrs"):
            _net(manager, "bad", cidr=cidr)
    assert call(manager, "list_networks") == []
    assert _net(manager, "ok", cidr="10.21.0.0/24")["cidr"] == "10.21.0.0/24"


def test_a_reserved_cidr_that_is_not_a_network_is_a_config_error(write_conf, load_conf) -> None:
    path = write_conf("[networks]\nreserved_cidrs = 10.0.0.0/8, 10.1.2.3/16\n")
    with pytest.raises(exception.InvalidConfig, match=r"\[networks\] reserved_cidrs .*10.1.2.3/16"):
        load_conf(path)
