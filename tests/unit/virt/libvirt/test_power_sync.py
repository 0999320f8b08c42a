"""Bulk power states of the libvirt driver, on libvirt's in-process test driver."""

from __future__ import annotations

import uuid as uuidlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.virt import base
from compute_driver.virt.libvirt.driver import LibvirtDriver, domain_name


@pytest.fixture
def driver(tmp_path) -> LibvirtDriver:
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("state_path", str(tmp_path))
    conf.set_override("uri", "test:///default", group="libvirt")
    drv = LibvirtDriver(conf)
    drv.init_host("unit")
    return drv


@pytest.fixture
def servers(driver) -> Iterator[list[str]]:
    """Four servers of ours: running, paused, shut down, suspended (managed save)."""
    uuids = []
    for _ in range(4):
        uuid = str(uuidlib.uuid4())
        spec = base.InstanceSpec(
            uuid=uuid,
            name="sync",
            project="p",
            flavor=base.FlavorSpec("m1.tiny", 1, 128, 1),
            image=base.ImageSpec(uuid=str(uuidlib.uuid4()), name="i", disk_format="raw", path="/i"),
            created_at="2026-11-25T00:00:00Z",
        )
        disk = lvxml.Disk(
            type="file",
            device="disk",
            driver_name="qemu",
            driver_type="qcow2",
            source_file="/v/%s.qcow2" % uuid,
            target_dev="vda",
            target_bus="virtio",
        )
        driver.spawn(spec, [disk], [], [base.VolumeRef(uuid + "_root", "dir", "vda")])
        uuids.append(uuid)
    driver.pause(uuids[1])
    driver.power_off(uuids[2], timeout=0, retry_interval=1)
    driver.suspend(uuids[3])
    yield uuids
    for uuid in uuids:
        driver.destroy(uuid)


@pytest.fixture
def foreign(driver) -> Iterator[list[str]]:
    """Running domains that are not ours: another name, and a squatter on a name of ours."""
    conn = driver.host.get_connection()
    made = []
    for name in ("other-" + uuidlib.uuid4().hex, domain_name(str(uuidlib.uuid4()))):
        domain = lvxml.Domain(
            type="test", name=name, uuid=str(uuidlib.uuid4()), memory_kib=8192, vcpus=1
        )
        domain.os = lvxml.OS(type="hvm")
        virt_dom = conn.defineXML(domain.to_string())
        virt_dom.create()
        made.append(virt_dom)
    yield [d.UUIDString() for d in made]
    for virt_dom in made:
        virt_dom.destroy()
        virt_dom.undefine()


class CountingConnection:
    """A connection that counts the calls made on it (and can fail some)."""

    def __init__(self, conn: libvirt.virConnect, refuse_nowait: bool = False) -> None:
        self._conn = conn
        self.refuse_nowait = refuse_nowait
        self.calls: Counter[str] = Counter()
        self.fail_with: int | None = None

    def getAllDomainStats(self, stats: int, flags: int = 0) -> list[tuple[Any, dict[str, Any]]]:  # noqa: N802
        self.calls["getAllDomainStats"] += 1
        if self.fail_with is not None:
            raise _libvirt_error(self.fail_with, "internal error: stats refused")
        if self.refuse_nowait and flags & libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT:
            raise _libvirt_error(libvirt.VIR_ERR_INVALID_ARG, "unsupported flags (0x20000000)")
        return self._conn.getAllDomainStats(stats, flags)

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        return getattr(self._conn, name)


def _libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, 0, message, libvirt.VIR_ERR_ERROR, "", None, None, 0, 0)
    return exc


def _counting(driver, monkeypatch, **kwargs: Any) -> CountingConnection:
    conn = CountingConnection(driver.host.get_connection(), **kwargs)
    monkeypatch.setattr(driver.host, "get_connection", lambda: conn)
    return conn


def test_bulk_power_states_match_per_domain_info(driver, servers, foreign) -> None:
    states = driver.power_states()
    assert [states[u] for u in servers] == ["running", "paused", "shutdown", "suspended"]
    for uuid in servers:
        assert states[uuid] == driver.get_info(uuid).power_state
    # Every domain with our metadata (others' tests may have left some) agrees too.
    assert {i.uuid: i.power_state for i in driver.list_instances()} == states
    assert not set(foreign) & set(states)


def test_power_states_costs_two_calls_whatever_the_number_of_domains(
    driver, servers, monkeypatch
) -> None:
    conn = _counting(driver, monkeypatch)
    driver.power_states()
    # One stats call, one managed-save listing (a domain of ours is shut off),
    # nothing per domain (lookups, info(), metadata()).
    assert conn.calls == Counter({"getAllDomainStats": 1, "listAllDomains": 1})


def test_no_managed_save_listing_when_nothing_of_ours_is_off(driver, servers, monkeypatch) -> None:
    for uuid in servers[2:]:
        driver.power_on(uuid)
    conn = _counting(driver, monkeypatch)
    states = driver.power_states()
    assert [states[u] for u in servers] == ["running", "paused", "running", "running"]
    assert conn.calls == Counter({"getAllDomainStats": 1})


def test_daemon_refusing_nowait_is_asked_without_it_from_then_on(
    driver, servers, monkeypatch
) -> None:
    conn = _counting(driver, monkeypatch, refuse_nowait=True)
    first = driver.power_states()
    assert conn.calls["getAllDomainStats"] == 2  # refused, then without NOWAIT
    assert driver.power_states() == first
    assert conn.calls["getAllDomainStats"] == 3


def test_a_refused_stats_call_is_a_virt_error(driver, servers, monkeypatch) -> None:
    conn = _counting(driver, monkeypatch)
    conn.fail_with = libvirt.VIR_ERR_INTERNAL_ERROR
    with pytest.raises(exception.VirtError, match="power_states"):
        driver.power_states()


def test_a_dead_connection_is_hypervisor_unavailable(driver, servers, monkeypatch) -> None:
    conn = _counting(driver, monkeypatch)
    conn.fail_with = libvirt.VIR_ERR_SYSTEM_ERROR
    monkeypatch.setattr(conn, "isAlive", lambda: False, raising=False)
    with pytest.raises(exception.HypervisorUnavailable):
        driver.power_states()
