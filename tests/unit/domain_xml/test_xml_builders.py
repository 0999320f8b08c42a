"""Builder behaviour: validation errors, absent values, booleans, units, metadata forms."""

from __future__ import annotations

from typing import Any

import pytest

from compute_driver import domain_xml as lvxml

UUID = "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10"


def _dom(**kwargs: Any) -> lvxml.Domain:
    base: dict[str, Any] = dict(
        type="qemu", name="cd-t", memory_kib=65536, vcpus=1, os=lvxml.OS(type="hvm")
    )
    base.update(kwargs)
    return lvxml.Domain(**base)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (lvxml.Domain, dict(vcpus=0), r"Domain\.vcpus: 0 is less than 1"),
        (lvxml.Domain, dict(memory_kib=0), r"Domain\.memory_kib"),
        (lvxml.Domain, dict(name="a/b"), r"Domain\.name"),
        (lvxml.Domain, dict(type="xen"), r"Domain\.type: 'xen' is not one of 'qemu', 'kvm'"),
        (lvxml.Domain, dict(uuid="nope"), r"is not a UUID"),
        (lvxml.Domain, dict(title="two\nlines"), r"Domain\.title"),
        (lvxml.Domain, dict(vcpus="two"), r"is not an integer"),
        (lvxml.Disk, dict(type="volume"), r"Disk\.type"),
        (lvxml.Disk, dict(readonly="yes"), r"is not a bool"),
        (lvxml.Interface, dict(type="vhostuser"), r"Interface\.type"),
        (lvxml.Interface, dict(mac="52:54:00:00:00"), r"is not a MAC address"),
        (lvxml.Interface, dict(mac="01:00:5e:00:00:01"), r"multicast"),
        (lvxml.Interface, dict(target_dev="tap-name-too-long"), r"Linux interface name"),
        (lvxml.CPU, dict(mode="host"), r"CPU\.mode"),
        (lvxml.DiskHost, dict(port=70000), r"greater than 65535"),
        (lvxml.OS, dict(boot_devices=["hd", "usb"]), r"'usb' is not one of"),
        (lvxml.PortRef, dict(mac="zz"), r"PortRef\.mac"),
        (lvxml.CPU, dict(topology_cores=0), r"CPU\.topology_cores: 0 is less than 1"),
        (lvxml.VCPUPin, dict(cpuset="2-1"), r"descending range"),
        (lvxml.VCPUPin, dict(cpuset="two"), r"is not a cpuset"),
        (lvxml.NUMATune, dict(memory_mode="bind"), r"NUMATune\.memory_mode"),
        (lvxml.Disk, dict(detect_zeroes="yes"), r"Disk\.detect_zeroes"),
        (lvxml.Disk, dict(total_iops_sec=-1), r"less than 0"),
        (lvxml.Rng, dict(rate_bytes=0), r"Rng\.rate_bytes"),
        (lvxml.Controller, dict(type="nvme"), r"Controller\.type"),
        (lvxml.MemoryBacking, dict(hugepage_kib=0), r"MemoryBacking\.hugepage_kib"),
        (lvxml.Domain, dict(vcpu_cpuset="0,,1"), r"Domain\.vcpu_cpuset"),
    ],
)
def test_constructor_rejects_invalid_values(cls: type, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(lvxml.XMLBuilderError, match=match):
        cls(**kwargs)


def test_errors_are_value_errors_and_assignment_is_checked() -> None:
    dom = _dom()
    with pytest.raises(ValueError, match="vcpus"):
        dom.vcpus = -1


def test_unknown_keyword_or_attribute_is_refused() -> None:
    with pytest.raises(TypeError, match="memory_mb"):
        lvxml.Domain(memory_mb=1)
    with pytest.raises(AttributeError, match="descrption"):
        _dom().descrption = "typo"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: lvxml.Domain(type="qemu", memory_kib=1, vcpus=1, os=lvxml.OS(type="hvm")),
            "name is required",
        ),
        (lambda: _dom(os=None), r"Domain\.os is required"),
        (
            lambda: _dom(
                devices=[lvxml.Disk(type="file", source_dev="/dev/sda", target_dev="vda")]
            ),
            "source_dev needs type 'block'",
        ),
        (
            lambda: _dom(devices=[lvxml.Disk(type="network", source_name="p/i", target_dev="vda")]),
            "needs source_protocol",
        ),
        (
            lambda: _dom(
                devices=[
                    lvxml.Disk(
                        type="network",
                        source_protocol="rbd",
                        target_dev="vda",
                        auth_username="u",
                        auth_secret_type="ceph",
                    )
                ]
            ),
            "exactly one of auth_secret_uuid",
        ),
        (lambda: _dom(devices=[lvxml.Interface(type="bridge")]), "source_bridge go together"),
        (
            lambda: _dom(devices=[lvxml.Interface(type="user", virtualport_type="openvswitch")]),
            "virtualport needs type",
        ),
        (
            lambda: _dom(
                devices=[
                    lvxml.Interface(
                        type="bridge", source_bridge="br0", target_dev="tap0", target_managed="no"
                    )
                ]
            ),
            "managed='no' needs type 'ethernet'",
        ),
        (
            lambda: _dom(devices=[lvxml.Interface(type="ethernet", target_managed="no")]),
            "managed='no' needs type 'ethernet' and a target dev",
        ),
        (lambda: _dom(devices=[lvxml.Serial(type="file")]), "needs source_path"),
        (
            lambda: _dom(devices=[lvxml.Serial(type="pty", log_append=True)]),
            "log_append needs log_file",
        ),
        (lambda: _dom(cpu=lvxml.CPU(mode="custom")), "needs model"),
        (lambda: _dom(os=lvxml.OS(type="hvm", cmdline="x")), "need kernel"),
        (lambda: _dom(devices=[lvxml.MemBalloon(model="none", stats_period=5)]), "stats_period"),
        (lambda: _dom(cpu=lvxml.CPU(topology_sockets=2)), "sockets, cores and threads together"),
        (lambda: _dom(cpu=lvxml.CPU(mode="host-model", model="qemu64")), "model needs mode"),
        (
            lambda: _dom(
                cpu=lvxml.CPU(numa_cells=[lvxml.NUMACell(id=1, cpus="0", memory_kib=65536)])
            ),
            "cell ids must be 0, 1",
        ),
        (
            lambda: _dom(
                vcpus=2,
                cpu=lvxml.CPU(
                    numa_cells=[
                        lvxml.NUMACell(id=0, cpus="0", memory_kib=16384),
                        lvxml.NUMACell(id=1, cpus="1", memory_kib=16384),
                    ]
                ),
            ),
            "not the sum of the NUMA cells",
        ),
        (
            lambda: _dom(cputune=lvxml.CPUTune(vcpupins=[lvxml.VCPUPin(vcpu=1, cpuset="0")])),
            "beyond the 1 vCPUs",
        ),
        (
            lambda: _dom(
                vcpus=2,
                cputune=lvxml.CPUTune(
                    vcpupins=[lvxml.VCPUPin(vcpu=0, cpuset="0"), lvxml.VCPUPin(vcpu=0, cpuset="1")]
                ),
            ),
            "pinned twice",
        ),
        (lambda: _dom(numatune=lvxml.NUMATune(memory_mode="strict")), "needs memory_nodeset"),
        (
            lambda: _dom(
                devices=[lvxml.Disk(type="file", target_dev="vda", io="native", cache="writeback")]
            ),
            "io 'native' needs cache 'none' or 'directsync'",
        ),
        (
            lambda: _dom(
                devices=[
                    lvxml.Disk(type="file", target_dev="vda", total_bytes_sec=1, read_bytes_sec=1)
                ]
            ),
            "total_bytes_sec excludes",
        ),
        (
            lambda: _dom(
                devices=[lvxml.Rng(model="virtio", backend_model="builtin", rate_period=10)]
            ),
            "rate_period needs rate_bytes",
        ),
    ],
)
def test_serialization_rejects_inconsistent_objects(build: Any, match: str) -> None:
    with pytest.raises(lvxml.XMLBuilderError, match=match):
        build().to_string()


def test_parsed_values_are_checked_when_written_again() -> None:
    dom = lvxml.Domain.parse(_dom().to_string().replace("<vcpu>1</vcpu>", "<vcpu>0</vcpu>"))
    assert dom.vcpus == 0
    with pytest.raises(lvxml.XMLBuilderError, match="vcpus"):
        dom.to_string()


def test_none_is_absent_and_booleans_map_to_elements_and_words() -> None:
    disk = lvxml.Disk(type="file", source_file="/x", target_dev="vda", cache=None, readonly=False)
    text = disk.to_string()
    assert "cache" not in text and "readonly" not in text and "<driver" not in text
    assert "<readonly/>" in lvxml.Disk(type="file", target_dev="hdc", readonly=True).to_string()
    nic = lvxml.Interface(type="bridge", source_bridge="br0", host_csum=True)
    assert '<driver name="qemu">' in nic.to_string() and '<host csum="on"/>' in nic.to_string()
    assert lvxml.Interface.parse(nic.to_string()).host_csum is True


def test_memory_writes_kib_twice_and_reads_other_units() -> None:
    text = _dom(memory_kib=262144).to_string()
    assert '<memory unit="KiB">262144</memory>' in text
    assert '<currentMemory unit="KiB">262144</currentMemory>' in text
    other = text.replace('<memory unit="KiB">262144</memory>', '<memory unit="MiB">256</memory>')
    assert lvxml.Domain.parse(other).memory_kib == 262144


def test_output_is_deterministic_and_in_declared_order() -> None:
    disk = lvxml.Disk(target_dev="vda", source_file="/x", type="file", driver_type="raw")
    assert (
        disk.to_string()
        == lvxml.Disk(
            type="file", driver_type="raw", source_file="/x", target_dev="vda"
        ).to_string()
    )
    assert disk.to_string().splitlines()[0] == '<disk type="file">'
    assert lvxml.Disk.declared()[:2] == ("type", "device")


def test_devices_of_keeps_document_order_and_equality_is_by_value() -> None:
    disks = [lvxml.Disk(type="file", source_file=f"/{n}", target_dev=n) for n in ("vda", "vdb")]
    dom = _dom(devices=[disks[0], lvxml.Watchdog(model="i6300esb"), disks[1]])
    assert dom.devices_of(lvxml.Disk) == disks
    assert dom.devices_of(lvxml.CharDevice) == []
    assert lvxml.Disk(type="file") != lvxml.Disk(type="block")
    assert "Disk(type='file'" in repr(disks[0])


def test_metadata_bare_and_namespaced_forms() -> None:
    md = lvxml.InstanceMetadata(
        uuid=UUID, name="web1", ports=[lvxml.PortRef(id="p", mac="52:54:00:00:00:01")]
    )
    bare = md.to_string()
    assert bare.startswith("<instance>") and "xmlns" not in bare
    assert lvxml.InstanceMetadata.parse(bare) == md
    namespaced = md.build()
    assert namespaced.nsmap == {lvxml.METADATA_PREFIX: lvxml.METADATA_NAMESPACE}
    assert lvxml.InstanceMetadata.from_element(namespaced) == md
    assert lvxml.InstanceMetadata.from_domain_xml(_dom().to_string()) is None
    assert lvxml.InstanceMetadata.from_domain_xml(_dom(metadata=md).to_string()) == md


def test_parse_errors_are_builder_errors() -> None:
    with pytest.raises(lvxml.XMLBuilderError, match="cannot parse"):
        lvxml.Domain.parse("<domain>")
    with pytest.raises(lvxml.XMLBuilderError, match="expected <domain>"):
        lvxml.Domain.parse("<disk type='file'/>")


def test_parse_accepts_an_xml_declaration() -> None:
    text = "<?xml version='1.0' encoding='UTF-8'?>\n" + _dom().to_string()
    assert lvxml.Domain.parse(text) == _dom()


def test_cpu_without_mode_writes_only_what_is_set() -> None:
    cpu = lvxml.CPU(topology_sockets=1, topology_cores=2, topology_threads=1)
    assert cpu.to_string().splitlines()[0] == "<cpu>"
    assert lvxml.CPU.parse(cpu.to_string()) == cpu


def test_sizes_in_kib_are_written_with_their_unit_and_read_from_other_units() -> None:
    cell = lvxml.NUMACell(id=0, cpus="0-1", memory_kib=1048576)
    assert 'memory="1048576" unit="KiB"' in cell.to_string()
    assert lvxml.NUMACell.parse("<cell id='0' cpus='0' memory='1' unit='GiB'/>").memory_kib == (
        1048576
    )
    assert lvxml.NUMACell.parse("<cell id='0' cpus='0' memory='512'/>").memory_kib == 512
    page = lvxml.MemoryBacking.parse(
        "<memoryBacking><hugepages><page size='2' unit='M'/></hugepages></memoryBacking>"
    )
    assert page.hugepage_kib == 2048
    with pytest.raises(lvxml.XMLBuilderError, match="not a memory unit"):
        lvxml.NUMACell.parse("<cell id='0' cpus='0' memory='1' unit='KB'/>")


def test_vcpu_cpuset_shares_the_vcpu_element() -> None:
    text = _dom(vcpus=2, vcpu_cpuset="0-1").to_string()
    assert '<vcpu cpuset="0-1">2</vcpu>' in text
    assert lvxml.Domain.parse(text).vcpu_cpuset == "0-1"
