"""The domains the libvirt driver builds are valid libvirt XML."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import pytest
from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver import domain_xml as lvxml
from compute_driver.virt import base
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


def test_a_scsi_guest_keeps_each_disk_apart_on_redefine(driver, tmp_path) -> None:
    """Issue 12 item 10: the root comes as vda and a volume main attached as
    vda too; on scsi the root becomes sda, and the volume's record and disk
    must stay the volume's (its alias and serial), not follow the root."""
    spec = dataclasses.replace(
        SPEC, image=dataclasses.replace(SPEC.image, properties={"hw_disk_bus": "scsi"})
    )
    volume_id = "3c2b1a09-8f7e-4d6c-9b5a-493827160504"

    def disk(path: str) -> lvxml.Disk:
        return lvxml.Disk(
            type="file",
            device="disk",
            driver_name="qemu",
            driver_type="qcow2",
            source_file=path,
            target_dev="vda",
            target_bus="virtio",
        )

    root, data = disk("/v/root.qcow2"), disk("/v/data.qcow2")
    refs = [
        base.VolumeRef(SPEC.uuid + "_root", "dir", "vda"),
        base.VolumeRef(volume_id, "dir", "vda"),
    ]
    domain = driver.build_domain(spec, [root, data], [], refs, "/c/config.iso")
    path = tmp_path / "domain.xml"
    path.write_text(domain.to_string())
    done = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr + done.stdout
    parsed = lvxml.Domain.parse(domain.to_string())
    disks = {d.source_file: d for d in parsed.devices_of(lvxml.Disk) if d.device == "disk"}
    got_root, got_data = disks["/v/root.qcow2"], disks["/v/data.qcow2"]
    assert (got_root.target_dev, got_root.alias) == ("sda", "ua-vol-%s_root" % SPEC.uuid)
    assert (got_data.target_dev, got_data.target_bus) == ("sdb", "scsi")
    assert (got_data.alias, got_data.serial) == ("ua-vol-" + volume_id, volume_id[:20])
    meta = parsed.metadata
    assert meta is not None and meta.disks == lvxml.DiskPolicy(bus="scsi")
    assert {v.id: v.target_dev for v in meta.volumes} == {
        SPEC.uuid + "_root": "sda",
        volume_id: "sdb",
    }
