"""Golden domains: each builds one representative document of tests/.../golden/<name>.xml."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from compute_driver import domain_xml as lvxml

GOLDEN_DIR = Path(__file__).parent / "golden"
INSTANCE = "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10"
IMAGE = "9e8d7c6b-5a49-4382-b1c0-d9e8f7a6b5c4"
PORT = "3f2e1d0c-ba98-4765-8432-10fedcba9876"
SECRET = "5c4b3a29-1807-46f5-a4b3-c2d1e0f9a8b7"
GUEST_DIR = "/var/lib/libvirt/images/cd-0b0c3a4e"


def _domain(name: str, **kwargs: object) -> lvxml.Domain:
    """A minimal valid domain; cases add what they are about."""
    base: dict[str, object] = dict(
        type="qemu",
        name=name,
        memory_kib=131072,
        vcpus=1,
        os=lvxml.OS(type="hvm", arch="x86_64", machine="pc"),
    )
    base.update(kwargs)
    return lvxml.Domain(**base)


def tiny_guest() -> lvxml.Domain:
    """Direct kernel boot with a config drive, serial log, console and metadata."""
    dom = lvxml.Domain(
        type="qemu",
        name="cd-0b0c3a4e",
        uuid=INSTANCE,
        title="web1",
        memory_kib=262144,
        vcpus=1,
        on_poweroff="destroy",
        on_reboot="restart",
        on_crash="destroy",
    )
    dom.os = lvxml.OS(
        type="hvm",
        arch="x86_64",
        machine="pc",
        kernel=f"{GUEST_DIR}/vmlinuz",
        initrd=f"{GUEST_DIR}/initrd.img",
        cmdline="console=ttyS0 panic=-1",
    )
    dom.features = lvxml.Features(acpi=True, apic=True)
    dom.cpu = lvxml.CPU(mode="host-model")
    dom.clock = lvxml.Clock(offset="utc")
    dom.metadata = lvxml.InstanceMetadata(
        uuid=INSTANCE,
        name="web1",
        project="demo",
        user_data_size=42,
        flavor=lvxml.FlavorRef(name="m1.nano", vcpus=1, memory_mb=256, root_gb=1),
        image_uuid=IMAGE,
        require_quiesce=True,
        created_at="2026-11-25T20:00:00Z",
        ports=[lvxml.PortRef(id=PORT, network="net-a", mac="52:54:00:0d:00:01", plugin="noop")],
        volumes=[lvxml.VolumeRef(id="vol-1", backend="dir", target_dev="vdb")],
    )
    dom.devices += [
        lvxml.Disk(
            type="file",
            device="disk",
            driver_name="qemu",
            driver_type="qcow2",
            source_file=f"{GUEST_DIR}/disk.qcow2",
            target_dev="vda",
            target_bus="virtio",
            cache="none",
            discard="unmap",
            serial="root-0b0c3a4e",
        ),
        lvxml.Disk(
            type="file",
            device="cdrom",
            driver_name="qemu",
            driver_type="raw",
            source_file=f"{GUEST_DIR}/config.iso",
            target_dev="hdc",
            target_bus="ide",
            readonly=True,
        ),
        lvxml.Serial(
            type="pty", target_port=0, log_file=f"{GUEST_DIR}/console.log", log_append=False
        ),
        lvxml.Console(type="pty", target_type="serial", target_port=0),
        lvxml.Channel(
            type="unix",
            source_mode="bind",
            source_path=f"{GUEST_DIR}/qga.sock",
            target_type="virtio",
            target_name="org.qemu.guest_agent.0",
        ),
        lvxml.MemBalloon(model="virtio", stats_period=10),
        lvxml.Rng(model="virtio", backend_model="random", backend_path="/dev/urandom"),
        lvxml.Watchdog(model="i6300esb", action="reset"),
    ]
    return dom


def ovs_interface() -> lvxml.Domain:
    """A port on an OVS (netdev datapath) bridge: virtualport, tap name, host csum off."""
    return _domain(
        "cd-ovs",
        devices=[
            lvxml.Interface(
                type="bridge",
                source_bridge="br-int",
                mac="52:54:00:0d:00:01",
                model="virtio",
                mtu=1450,
                target_dev="tap3f2e1d0c-ba",
                virtualport_type="openvswitch",
                interfaceid=PORT,
                host_csum=False,
                alias="ua-port-3f2e1d0c",
            )
        ],
    )


def bridge_mtu() -> lvxml.Domain:
    """A Linux bridge port with a tenant MTU; boots from disk with a custom CPU model."""
    dom = _domain(
        "cd-bridge",
        devices=[
            lvxml.Disk(
                type="file",
                device="disk",
                driver_type="qcow2",
                source_file="/var/lib/cd/root.qcow2",
                target_dev="vda",
                target_bus="virtio",
            ),
            lvxml.Interface(
                type="bridge",
                source_bridge="brq-net-a",
                mac="52:54:00:0d:00:02",
                model="virtio",
                mtu=1450,
            ),
        ],
    )
    assert dom.os is not None
    dom.os.boot_devices = ["hd", "network"]
    dom.cpu = lvxml.CPU(mode="custom", model="qemu64")
    dom.clock = lvxml.Clock(offset="localtime")
    return dom


def interface_kinds() -> lvxml.Domain:
    """The other interface types: libvirt network, a tap made by someone else (ethernet,
    managed='no', as the ovs plugin does), user-mode."""
    return _domain(
        "cd-nics",
        devices=[
            lvxml.Interface(type="network", source_network="default", model="virtio"),
            lvxml.Interface(
                type="ethernet",
                target_dev="tapcdnics0",
                target_managed="no",
                model="virtio",
                driver_name="vhost",
            ),
            lvxml.Interface(type="user", model="e1000"),
            lvxml.Serial(type="file", source_path="/var/lib/cd/serial.log", target_port=0),
        ],
    )


def rbd_disk() -> lvxml.Domain:
    """A Ceph RBD volume through QEMU's librbd, with a cephx secret."""
    return _domain(
        "cd-rbd",
        devices=[
            lvxml.Disk(
                type="network",
                device="disk",
                driver_name="qemu",
                driver_type="raw",
                cache="writeback",
                source_protocol="rbd",
                source_name="volumes/volume-1",
                hosts=[
                    lvxml.DiskHost(name="127.0.0.1", port=6789),
                    lvxml.DiskHost(name="127.0.0.2", port=3300),
                ],
                auth_username="cinder",
                auth_secret_type="ceph",
                auth_secret_uuid=SECRET,
                target_dev="vdb",
                target_bus="virtio",
                serial="volume-1",
                alias="ua-vol-volume-1",
            )
        ],
    )


def storage_kinds() -> lvxml.Domain:
    """NFS (libnfs, with identity), iSCSI (libiscsi, CHAP by usage) and a shared block device."""
    return _domain(
        "cd-disks",
        devices=[
            lvxml.Disk(
                type="network",
                device="disk",
                driver_name="qemu",
                driver_type="qcow2",
                source_protocol="nfs",
                source_name="/export/volume-2.qcow2",
                hosts=[lvxml.DiskHost(name="127.0.0.1")],
                source_identity_user="root",
                source_identity_group="root",
                target_dev="vdb",
                target_bus="virtio",
            ),
            lvxml.Disk(
                type="network",
                device="disk",
                driver_name="qemu",
                driver_type="raw",
                cache="none",
                source_protocol="iscsi",
                source_name="iqn.2026-01.dev.compute-driver:target1/1",
                hosts=[lvxml.DiskHost(name="127.0.0.1", port=3260)],
                source_initiator_iqn="iqn.2026-01.dev.compute-driver:client",
                auth_username="chapuser",
                auth_secret_type="iscsi",
                auth_secret_usage="cd-chap",
                target_dev="vdc",
                target_bus="virtio",
            ),
            lvxml.Disk(
                type="block",
                device="disk",
                driver_name="qemu",
                driver_type="raw",
                cache="none",
                io="native",
                source_dev="/dev/mapper/cd-vol3",
                target_dev="sda",
                target_bus="scsi",
                shareable=True,
            ),
        ],
    )


def maximal() -> lvxml.Domain:
    """Everything guest_config can turn on (kvm, dedicated, 2 NUMA cells, 1 GiB pages, scsi).

    NOTE: test_guest_config checks that guest_xml.apply() writes exactly this.
    """
    root = lvxml.Disk(
        type="file",
        device="disk",
        driver_name="qemu",
        driver_type="qcow2",
        cache="directsync",
        io="native",
        discard="unmap",
        detect_zeroes="unmap",
        source_file=f"{GUEST_DIR}/disk.qcow2",
        target_dev="sda",
        target_bus="scsi",
        serial="root",
        alias="ua-vol-root",
        total_bytes_sec=10485760,
        read_iops_sec=500,
        write_iops_sec=400,
    )
    return lvxml.Domain(
        type="kvm",
        name="cd-maximal",
        uuid=INSTANCE,
        metadata=lvxml.InstanceMetadata(
            uuid=INSTANCE,
            name="maximal",
            volumes=[lvxml.VolumeRef(id="root", backend="dir", target_dev="sda")],
            disks=lvxml.DiskPolicy(
                bus="scsi",
                cache="directsync",
                io="native",
                discard="unmap",
                detect_zeroes="unmap",
                total_bytes_sec=10485760,
                read_iops_sec=500,
                write_iops_sec=400,
            ),
        ),
        memory_kib=2097152,
        memory_backing=lvxml.MemoryBacking(hugepage_kib=1048576),
        vcpus=4,
        cputune=lvxml.CPUTune(
            vcpupins=[lvxml.VCPUPin(vcpu=v, cpuset=str(v + 2)) for v in range(4)],
            emulatorpin_cpuset="2-5",
        ),
        numatune=lvxml.NUMATune(
            memory_mode="strict",
            memory_nodeset="0-1",
            memnodes=[
                lvxml.NUMAMemNode(cellid=0, mode="strict", nodeset="0"),
                lvxml.NUMAMemNode(cellid=1, mode="strict", nodeset="1"),
            ],
        ),
        os=lvxml.OS(type="hvm", arch="x86_64", machine="pc", boot_devices=["hd"]),
        cpu=lvxml.CPU(
            mode="custom",
            model="qemu64",
            topology_sockets=2,
            topology_cores=2,
            topology_threads=1,
            numa_cells=[
                lvxml.NUMACell(id=0, cpus="0-1", memory_kib=1048576),
                lvxml.NUMACell(id=1, cpus="2-3", memory_kib=1048576),
            ],
        ),
        devices=[
            root,
            lvxml.Controller(type="scsi", index=0, model="virtio-scsi"),
            lvxml.Channel(type="unix", target_type="virtio", target_name="org.qemu.guest_agent.0"),
            lvxml.Rng(
                model="virtio",
                rate_bytes=1024,
                rate_period=2000,
                backend_model="random",
                backend_path="/dev/urandom",
            ),
            lvxml.Watchdog(model="i6300esb", action="poweroff"),
            lvxml.MemBalloon(model="virtio", stats_period=5),
        ],
    )


def shared_cpus() -> lvxml.Domain:
    """An unpinned guest kept off the dedicated CPUs: <cpu> with only a topology, 2 MiB pages."""
    return _domain(
        "cd-shared",
        metadata=lvxml.InstanceMetadata(
            uuid=INSTANCE,
            name="shared",
            disks=lvxml.DiskPolicy(
                bus="sata",
                cache="writeback",
                io="threads",
                discard="ignore",
                detect_zeroes="on",
                read_bytes_sec=20971520,
                write_bytes_sec=10485760,
                total_iops_sec=1000,
            ),
        ),
        memory_kib=262144,
        memory_backing=lvxml.MemoryBacking(hugepage_kib=2048),
        vcpus=2,
        vcpu_cpuset="0-1,6-7",
        cpu=lvxml.CPU(topology_sockets=1, topology_cores=1, topology_threads=2),
        devices=[
            lvxml.Disk(
                type="file",
                device="disk",
                driver_name="qemu",
                driver_type="qcow2",
                cache="writeback",
                io="threads",
                discard="ignore",
                detect_zeroes="on",
                source_file="/var/lib/cd/root.qcow2",
                target_dev="sda",
                target_bus="sata",
                read_bytes_sec=20971520,
                write_bytes_sec=10485760,
                total_iops_sec=1000,
            ),
            lvxml.MemBalloon(model="none"),
        ],
    )


CASES: dict[str, Callable[[], lvxml.Domain]] = {
    "tiny-guest": tiny_guest,
    "ovs-interface": ovs_interface,
    "bridge-mtu": bridge_mtu,
    "interface-kinds": interface_kinds,
    "rbd-disk": rbd_disk,
    "storage-kinds": storage_kinds,
    "maximal": maximal,
    "shared-cpus": shared_cpus,
}


@pytest.fixture(params=sorted(CASES))
def golden_case(request: pytest.FixtureRequest) -> tuple[str, lvxml.Domain, Path]:
    """(name, freshly built domain, path of its golden file)."""
    name = request.param
    return name, CASES[name](), GOLDEN_DIR / f"{name}.xml"


@pytest.fixture
def golden_dir() -> Path:
    return GOLDEN_DIR


@pytest.fixture
def golden_domains() -> dict[str, lvxml.Domain]:
    return {name: build() for name, build in CASES.items()}
