"""Parsing what libvirt gives back: a running domain's dumpxml, and libvirt's test driver."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from compute_driver import domain_xml as lvxml
from compute_driver.domain_xml.base import XMLBuilder

FIXTURE = Path(__file__).parent / "fixtures" / "dumpxml-running.xml"
PROBE = "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
IMAGES = "/var/lib/libvirt/images/x"


def _expected_running() -> lvxml.Domain:
    """Everything we declare, as the fixture has it (libvirt's canonical values included)."""
    log = dict(log_file=f"{IMAGES}/console.log", log_append=False)
    return lvxml.Domain(
        type="qemu",
        name="cdxmlprobe-tmp",
        uuid=PROBE,
        memory_kib=262144,
        vcpus=1,
        metadata=lvxml.InstanceMetadata(
            uuid=PROBE,
            name="probe",
            project="demo",
            ports=[lvxml.PortRef(id="p1", mac="52:54:00:00:00:01")],
        ),
        os=lvxml.OS(
            type="hvm",
            arch="x86_64",
            machine="pc-i440fx-7.2",
            kernel=f"{IMAGES}/vmlinuz",
            initrd=f"{IMAGES}/initrd.img",
            cmdline="console=ttyS0",
            boot_devices=["hd"],
        ),
        features=lvxml.Features(acpi=True, apic=True),
        cpu=lvxml.CPU(mode="custom", model="qemu64"),
        clock=lvxml.Clock(offset="utc"),
        on_poweroff="destroy",
        on_reboot="restart",
        on_crash="destroy",
        devices=[
            lvxml.Disk(
                type="file",
                device="disk",
                driver_name="qemu",
                driver_type="qcow2",
                cache="none",
                discard="unmap",
                source_file=f"{IMAGES}/disk.qcow2",
                target_dev="vda",
                target_bus="virtio",
                alias="virtio-disk0",
            ),
            lvxml.Disk(
                type="network",
                device="disk",
                driver_name="qemu",
                driver_type="raw",
                source_protocol="rbd",
                source_name="rbd/vol1",
                hosts=[lvxml.DiskHost(name="127.0.0.1", port=6789)],
                auth_username="cinder",
                auth_secret_type="ceph",
                auth_secret_uuid=PROBE,
                target_dev="vdb",
                target_bus="virtio",
                alias="virtio-disk1",
            ),
            lvxml.Disk(
                type="file",
                device="cdrom",
                driver_name="qemu",
                driver_type="raw",
                source_file=f"{IMAGES}/config.iso",
                target_dev="hdc",
                target_bus="ide",
                readonly=True,
                alias="ide0-1-0",
            ),
            # libvirt adds these itself: they parse, and write back valid.
            lvxml.Controller(type="usb", index=0, model="piix3-uhci"),
            lvxml.Controller(type="pci", index=0, model="pci-root"),
            lvxml.Controller(type="ide", index=0),
            lvxml.Controller(type="virtio-serial", index=0),
            lvxml.Interface(
                type="bridge",
                mac="52:54:00:00:00:01",
                source_bridge="br-int",
                virtualport_type="openvswitch",
                interfaceid=PROBE,
                target_dev="tapcdprobe",
                model="virtio",
                host_csum=False,
                mtu=1450,
                alias="net0",
            ),
            lvxml.Interface(
                type="bridge",
                mac="52:54:00:00:00:02",
                source_bridge="brq1",
                target_dev="vnet3",
                model="virtio",
                mtu=1450,
                alias="net1",
            ),
            lvxml.Serial(
                type="pty", source_path="/dev/pts/3", target_type="isa-serial", target_port=0, **log
            ),
            lvxml.Console(
                type="pty", source_path="/dev/pts/3", target_type="serial", target_port=0, **log
            ),
            lvxml.Channel(
                type="unix",
                source_mode="bind",
                source_path="/var/lib/libvirt/qemu/channel/target/"
                "domain-7-cdxmlprobe-tmp/org.qemu.guest_agent.0",
                target_type="virtio",
                target_name="org.qemu.guest_agent.0",
            ),
            lvxml.Watchdog(model="i6300esb", action="reset"),
            lvxml.MemBalloon(model="virtio", stats_period=10),
            lvxml.Rng(model="virtio", backend_model="random", backend_path="/dev/urandom"),
        ],
    )


def test_running_dumpxml_parses_declared_and_skips_the_rest() -> None:
    parsed = lvxml.Domain.parse(FIXTURE.read_text())
    assert parsed == _expected_running()
    assert [d.target_dev for d in parsed.devices_of(lvxml.Disk)] == ["vda", "vdb", "hdc"]
    # What we parsed is writable again and still valid for libvirt.
    assert lvxml.Domain.parse(parsed.to_string()) == parsed


def test_metadata_from_dumpxml_ignores_foreign_namespaces() -> None:
    md = lvxml.InstanceMetadata.from_domain_xml(FIXTURE.read_text())
    assert md == _expected_running().metadata


def _kept(ours: Any, theirs: Any) -> bool:
    """True when ``theirs`` holds every value we set in ``ours`` (libvirt may add more)."""
    if isinstance(ours, XMLBuilder):
        return type(ours) is type(theirs) and all(
            _kept(value, theirs.__dict__[name]) for name, value in ours.non_default().items()
        )
    if isinstance(ours, list):  # libvirt reorders devices by kind
        return all(any(_kept(item, other) for other in theirs) for item in ours)
    return bool(ours == theirs)


@pytest.fixture
def test_conn() -> Any:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    conn = libvirt.open("test:///default")  # in-process driver, no daemon
    yield conn
    conn.close()


def test_libvirt_keeps_everything_we_write(
    test_conn: Any, golden_domains: dict[str, lvxml.Domain]
) -> None:
    for name, dom in golden_domains.items():
        dom.name = f"cdtest-{uuid.uuid4().hex[:8]}"
        virdom = test_conn.defineXML(dom.to_string())
        try:
            parsed = lvxml.Domain.parse(virdom.XMLDesc())
        finally:
            virdom.undefine()
        assert _kept(dom, parsed), (
            f"{name}: libvirt dropped or changed a value:\n{parsed.to_string()}"
        )


def test_metadata_api_round_trip(test_conn: Any, golden_domains: dict[str, lvxml.Domain]) -> None:
    import libvirt

    dom = golden_domains["ovs-interface"]
    dom.name = f"cdtest-{uuid.uuid4().hex[:8]}"
    md = golden_domains["tiny-guest"].metadata
    assert md is not None
    virdom = test_conn.defineXML(dom.to_string())
    try:
        assert lvxml.InstanceMetadata.from_domain_xml(virdom.XMLDesc()) is None
        virdom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            md.to_string(),
            lvxml.METADATA_PREFIX,
            lvxml.METADATA_NAMESPACE,
        )
        bare = virdom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, lvxml.METADATA_NAMESPACE)
        assert lvxml.InstanceMetadata.parse(bare) == md
        assert lvxml.InstanceMetadata.from_domain_xml(virdom.XMLDesc()) == md
    finally:
        virdom.undefine()
