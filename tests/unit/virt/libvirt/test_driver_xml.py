"""The domains the libvirt driver builds are valid libvirt XML."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver.virt import base
from compute_driver.virt.libvirt import xml as lvxml
from compute_driver.virt.libvirt.driver import LibvirtDriver

SPEC = base.InstanceSpec(
    uuid="6f1c2b1e-3d4a-4f5b-8c6d-7e8f9a0b1c2d",
    name="web_1",
    project="demo",
    flavor=base.FlavorSpec("m1.tiny", 1, 512, 1),
    image=base.ImageSpec(
        uuid="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        name="guest",
        disk_format="qcow2",
        path="/var/lib/compute-driver/images/x/disk.qcow2",
        kernel_path="/var/lib/compute-driver/images/x/kernel",
        initrd_path="/var/lib/compute-driver/images/x/initrd",
        cmdline="console=ttyS0",
    ),
    created_at="2026-11-25T20:00:00Z",
)


@pytest.fixture
def driver(tmp_path) -> LibvirtDriver:
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("state_path", str(tmp_path))
    return LibvirtDriver(conf)


@pytest.mark.parametrize("virt_type", ["qemu", "kvm", "test"])
def test_generated_domain_passes_virt_xml_validate(driver, tmp_path, virt_type) -> None:
    assert shutil.which("virt-xml-validate"), "virt-xml-validate (libvirt-clients) is required"
    driver.virt_type = virt_type
    root = lvxml.Disk(
        type="file",
        device="disk",
        driver_name="qemu",
        driver_type="qcow2",
        source_file="/v/root.qcow2",
        target_dev="vda",
        target_bus="virtio",
    )
    nic = lvxml.Interface(type="ethernet", mac="52:54:00:12:34:56", model="virtio")
    domain = driver.build_domain(
        SPEC, [root], [nic], [base.VolumeRef("r", "dir", "vda")], "/c/config.iso"
    )
    path = tmp_path / "domain.xml"
    path.write_text(domain.to_string())
    done = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr + done.stdout
    parsed = lvxml.Domain.parse(domain.to_string())
    assert parsed == domain
    meta = lvxml.InstanceMetadata.from_domain_xml(domain.to_string())
    assert meta.uuid == SPEC.uuid and meta.volumes[0].target_dev == "vda"
