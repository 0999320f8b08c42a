"""Power actions of the libvirt driver on libvirt's in-process test driver."""

from __future__ import annotations

import uuid as uuidlib

import pytest
from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.virt import base
from compute_driver.virt.libvirt.driver import LibvirtDriver


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
def server(driver) -> str:
    uuid = str(uuidlib.uuid4())
    spec = base.InstanceSpec(
        uuid=uuid,
        name="power",
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
    # spawn says the state it left the guest in (what the agent reports).
    assert driver.spawn(spec, [disk], [], [base.VolumeRef(uuid + "_root", "dir", "vda")]) == (
        "running"
    )
    yield uuid
    driver.destroy(uuid)


def test_each_action_reaches_its_power_state_and_is_idempotent(driver, server) -> None:
    assert driver.get_info(server).power_state == "running"
    driver.pause(server)
    driver.pause(server)
    assert driver.get_info(server).power_state == "paused"
    driver.unpause(server)
    driver.unpause(server)
    assert driver.get_info(server).power_state == "running"
    assert driver.power_off(server, timeout=5, retry_interval=1) is True
    assert driver.power_off(server, timeout=5, retry_interval=1) is True
    assert driver.get_info(server).power_state == "shutdown"
    driver.power_on(server)
    driver.power_on(server)
    assert driver.get_info(server).power_state == "running"
    driver.suspend(server)
    assert driver.get_info(server).power_state == "suspended"
    driver.power_on(server)
    assert driver.get_info(server).power_state == "running"
    assert driver.reboot(server, hard=True, timeout=5) is False
    assert driver.get_info(server).power_state == "running"


def test_paused_guest_is_forced_off_at_once(driver, server) -> None:
    driver.pause(server)
    assert driver.power_off(server, timeout=30, retry_interval=1) is False
    assert driver.get_info(server).power_state == "shutdown"


@pytest.mark.parametrize("action", ["pause", "unpause", "suspend", "power_on"])
def test_unknown_server_is_not_found(driver, action) -> None:
    with pytest.raises(exception.InstanceNotFound):
        getattr(driver, action)(str(uuidlib.uuid4()))


def test_diagnostics_come_from_one_bulk_stats_call(driver, server) -> None:
    diagnostics = driver.get_diagnostics(server)
    assert diagnostics["power_state"] == "running"
    # libvirt's test driver fills in only the state group; QEMU's are checked
    # in tests/functional/test_server_actions.py.
    assert diagnostics["state.state"] == 1
