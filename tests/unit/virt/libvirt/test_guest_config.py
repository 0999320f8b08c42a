"""guest_config: every property, every conflict, defaults per virt_type, and whole domains."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from compute_driver import domain_xml as lvxml
from compute_driver import exception, guest_properties
from compute_driver.objects import FlavorSpec
from compute_driver.virt.libvirt import guest_config as gc
from compute_driver.virt.libvirt import guest_xml
from compute_driver.virt.libvirt.host_facts import (
    HostFacts,
    format_cpuset,
    parse_cpuset,
    pinned_cpus,
)

GOLDEN = Path(__file__).parents[2] / "domain_xml" / "golden"
INSTANCE = "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10"
GUEST_DIR = "/var/lib/libvirt/images/cd-0b0c3a4e"
NODES = (frozenset(range(4)), frozenset(range(4, 8)))


def _host(virt_type: str = "kvm", **kwargs: Any) -> HostFacts:
    """8 CPUs in two NUMA nodes, 2-7 dedicated, 2 MiB and 1 GiB pages reserved."""
    base: dict[str, Any] = dict(
        cpus=8,
        dedicated_cpus=frozenset(range(2, 8)),
        hugepage_sizes_kib=frozenset({2048, 1048576}),
        virt_type=virt_type,
        numa_nodes=NODES,
    )
    base.update(kwargs)
    return HostFacts(**base)


def _settings(
    specs: dict[str, str] | None = None,
    props: dict[str, str] | None = None,
    *,
    vcpus: int = 2,
    memory_mb: int = 512,
    host: HostFacts | None = None,
) -> gc.GuestSettings:
    host = host or _host()
    flavor = FlavorSpec("f", vcpus, memory_mb, 1, specs or {})
    return gc.guest_settings(flavor, props or {}, host, host.virt_type)


def _rejects(match: str, specs: dict[str, str] | None = None, **kwargs: Any) -> None:
    with pytest.raises(gc.GuestConfigError, match=match):
        _settings(specs, **kwargs)


def _root(**kwargs: Any) -> lvxml.Disk:
    base: dict[str, Any] = dict(
        type="file",
        device="disk",
        driver_name="qemu",
        driver_type="qcow2",
        source_file=f"{GUEST_DIR}/disk.qcow2",
        target_dev="vda",
        target_bus="virtio",
    )
    base.update(kwargs)
    return lvxml.Disk(**base)


def _domain(
    settings: gc.GuestSettings, disks: list[lvxml.Disk] | None = None, name: str = "cd-t"
) -> lvxml.Domain:
    """A domain as the driver sizes it, with ``disks`` and a volume record per
    disk (named, as the driver names them, by alias and serial)."""
    disks = disks if disks is not None else [_root()]
    for disk in disks:
        if disk.device == "disk":
            guest_xml.identify(disk, str(disk.target_dev))
    return lvxml.Domain(
        type=settings.virt_type,
        name=name,
        memory_kib=settings.memory_kib,
        vcpus=settings.vcpus,
        os=lvxml.OS(type="hvm", arch="x86_64", machine="pc"),
        metadata=lvxml.InstanceMetadata(
            uuid=INSTANCE,
            name="t",
            volumes=[
                lvxml.VolumeRef(id=d.target_dev, backend="dir", target_dev=d.target_dev)
                for d in disks
            ],
        ),
        devices=list(disks),
    )


def _applied(
    specs: dict[str, str] | None = None,
    props: dict[str, str] | None = None,
    disks: list[lvxml.Disk] | None = None,
    **kwargs: Any,
) -> lvxml.Domain:
    settings = _settings(specs, props, **kwargs)
    disks = disks if disks is not None else [_root()]
    domain = _domain(settings, disks)
    guest_xml.apply(domain, settings, disks)
    return domain


def _validate(domain: lvxml.Domain, tmp_path: Path) -> None:
    """virt-xml-validate the domain, and check it parses back equal."""
    assert shutil.which("virt-xml-validate"), "virt-xml-validate (libvirt-clients) is required"
    path = tmp_path / f"{domain.name}.xml"
    path.write_text(domain.to_string())
    done = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert lvxml.Domain.parse(path.read_text()) == domain


# --- cpusets and host facts -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("2-5,8", {2, 3, 4, 5, 8}),
        ("0-7,^3", {0, 1, 2, 4, 5, 6, 7}),
        ("4", {4}),
        (" 1 , 3 ", {1, 3}),
        ("", set()),
    ],
)
def test_parse_cpuset(text: str, cpus: set[int]) -> None:
    assert parse_cpuset(text) == frozenset(cpus)


@pytest.mark.parametrize("text", ["a", "3-1", "1,,2", "-1", "1-", "1;2", "^"])
def test_parse_cpuset_rejects_malformed_sets(text: str) -> None:
    with pytest.raises(ValueError, match="is not a cpuset"):
        parse_cpuset(text)


def test_format_cpuset_is_the_shortest_form_and_round_trips() -> None:
    assert format_cpuset({8, 2, 3, 4, 5}) == "2-5,8"
    assert format_cpuset([1, 3, 5]) == "1,3,5"
    assert format_cpuset([]) == ""
    assert parse_cpuset(format_cpuset({0, 1, 2, 7, 9, 10})) == {0, 1, 2, 7, 9, 10}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(cpus=0), "at least one CPU"),
        (dict(dedicated_cpus=frozenset({7, 8, 9})), "dedicated CPUs 8-9 do not exist"),
        (dict(virt_type="xen"), "virt_type 'xen'"),
        (dict(numa_nodes=(frozenset({0, 1}), frozenset({1, 2}))), "overlap"),
        (dict(numa_nodes=(frozenset({0, 8}),)), "overlap or name missing CPUs"),
    ],
)
def test_host_facts_reject_impossible_hosts(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _host(**kwargs)


CAPABILITIES = """<capabilities><host>
  <cpu><arch>x86_64</arch>
    <pages unit='KiB' size='4'/><pages unit='KiB' size='2048'/><pages unit='KiB' size='1048576'/>
  </cpu>
  <topology><cells num='2'>
    <cell id='1'><pages unit='KiB' size='4'>100</pages><pages unit='KiB' size='2048'>0</pages>
      <pages unit='KiB' size='1048576'>0</pages>
      <cpus num='2'><cpu id='2'/><cpu id='3'/></cpus></cell>
    <cell id='0'><pages unit='KiB' size='4'>100</pages><pages unit='KiB' size='2048'>512</pages>
      <pages unit='KiB' size='1048576'>0</pages>
      <cpus num='2'><cpu id='0'/><cpu id='1'/></cpus></cell>
  </cells></topology>
</host></capabilities>"""


def test_host_facts_from_capabilities() -> None:
    host = HostFacts.from_capabilities(
        CAPABILITIES, virt_type="qemu", dedicated_cpus=parse_cpuset("2-3")
    )
    assert host == HostFacts(
        cpus=4,
        dedicated_cpus=frozenset({2, 3}),
        hugepage_sizes_kib=frozenset({2048}),  # 1 GiB pages exist but none are reserved
        virt_type="qemu",
        numa_nodes=(frozenset({0, 1}), frozenset({2, 3})),
    )
    sparse = CAPABILITIES.replace("cell id='1'", "cell id='2'").replace("id='3'", "id='5'")
    facts = HostFacts.from_capabilities(sparse, virt_type="qemu")
    assert facts.cpus == 6  # CPUs 3 and 4 are offline
    assert facts.numa_nodes == (frozenset({0, 1}), frozenset(), frozenset({2, 5}))
    with pytest.raises(ValueError, match="no <host>"):
        HostFacts.from_capabilities("<capabilities/>", virt_type="qemu")


def test_pinned_cpus_of_existing_domains() -> None:
    pinned = _applied({"hw:cpu_policy": "dedicated"}, vcpus=3)
    unpinned = _applied()
    assert pinned_cpus([pinned, unpinned]) == {4, 5, 6}  # 3 vCPUs fit only node 1


# --- defaults ---------------------------------------------------------------


def test_defaults_for_kvm() -> None:
    settings = _settings()
    assert (settings.cpu_mode, settings.cpu_model, settings.topology) == ("host-model", None, None)
    assert settings.numa_cells == () and settings.vcpu_pins == () and settings.hugepage_kib is None
    assert settings.shared_cpus == {0, 1}  # kept off the dedicated set 2-7
    assert (settings.disk_bus, settings.disk_cache, settings.disk_io) == ("virtio", None, None)
    assert settings.disk_iotune == () and settings.rng and not settings.qemu_guest_agent
    assert settings.mem_stats_period == 10 and settings.watchdog_action is None
    domain = _applied()
    assert domain.cpu == lvxml.CPU(mode="host-model")
    assert [type(d).__name__ for d in domain.devices] == ["Disk", "Rng", "MemBalloon"]
    assert domain.devices_of(lvxml.Disk)[0].cache == "none"


def test_defaults_for_qemu_are_tcg_safe() -> None:
    settings = _settings(host=_host("qemu"))
    assert settings.cpu_mode == "none"
    domain = _applied(host=_host("qemu"))
    assert domain.cpu is None
    assert domain.devices_of(lvxml.Rng)
    assert domain.devices_of(lvxml.MemBalloon)


def test_defaults_for_the_test_driver_add_no_rng_or_balloon() -> None:
    settings = _settings({}, {"hw_rng": "true", "hw_mem_stats_period": "30"}, host=_host("test"))
    assert settings.cpu_mode == "none" and not settings.rng
    assert settings.mem_stats_period is None
    domain = _applied(host=_host("test"))
    assert domain.cpu is None and [type(d).__name__ for d in domain.devices] == ["Disk"]


def test_no_dedicated_set_means_no_cpuset() -> None:
    assert _settings(host=_host(dedicated_cpus=frozenset())).shared_cpus == frozenset()
    assert _applied(host=_host(dedicated_cpus=frozenset())).vcpu_cpuset is None


# --- CPU topology, NUMA, pinning, huge pages ---------------------------------


@pytest.mark.parametrize(
    ("specs", "topology"),
    [
        ({"hw:cpu_sockets": "2", "hw:cpu_cores": "2", "hw:cpu_threads": "1"}, (2, 2, 1)),
        ({"hw:cpu_threads": "2"}, (2, 1, 2)),
        ({"hw:cpu_sockets": "2"}, (2, 2, 1)),
        ({"hw:cpu_cores": "4"}, (1, 4, 1)),
        ({"hw:cpu_sockets": "1", "hw:cpu_threads": "2"}, (1, 2, 2)),
    ],
)
def test_topology_fills_in_what_is_missing(specs: dict[str, str], topology: tuple) -> None:
    assert _settings(specs, vcpus=4).topology == topology
    cpu = _applied(specs, vcpus=4).cpu
    assert cpu is not None
    assert (cpu.topology_sockets, cpu.topology_cores, cpu.topology_threads) == topology


@pytest.mark.parametrize(
    "specs",
    [
        {"hw:cpu_sockets": "2", "hw:cpu_cores": "3", "hw:cpu_threads": "1"},
        {"hw:cpu_sockets": "3"},
        {"hw:cpu_threads": "3"},
        {"hw:cpu_cores": "8"},
    ],
)
def test_topology_product_must_equal_the_vcpus(specs: dict[str, str]) -> None:
    _rejects(r"the product must equal the vCPUs", specs, vcpus=4)


def test_topology_error_names_the_properties_and_values() -> None:
    with pytest.raises(gc.GuestConfigError) as info:
        _settings({"hw:cpu_sockets": "2", "hw:cpu_cores": "3"}, vcpus=4)
    assert info.value.kwargs["property"] == "hw:cpu_sockets,hw:cpu_cores"
    assert "2 x 3 x 1 = 6, but the flavor has 4 vCPUs" in info.value.message


def test_topology_without_mode_writes_a_cpu_without_mode() -> None:
    cpu = _applied({"hw:cpu_threads": "2"}, host=_host("qemu")).cpu
    assert cpu == lvxml.CPU(topology_sockets=1, topology_cores=1, topology_threads=2)


def test_numa_nodes_split_vcpus_and_memory_evenly() -> None:
    settings = _settings({"hw:numa_nodes": "2"}, vcpus=4, memory_mb=1024)
    assert settings.numa_cells == (
        gc.GuestCell(0, frozenset({0, 1}), 524288),
        gc.GuestCell(1, frozenset({2, 3}), 524288),
    )
    cpu = _applied({"hw:numa_nodes": "2"}, vcpus=4, memory_mb=1024).cpu
    assert cpu is not None and cpu.numa_cells == [
        lvxml.NUMACell(id=0, cpus="0-1", memory_kib=524288),
        lvxml.NUMACell(id=1, cpus="2-3", memory_kib=524288),
    ]
    one = _settings({"hw:numa_nodes": "1"})
    assert len(one.numa_cells) == 1  # asked for: one guest NUMA node is still written


@pytest.mark.parametrize(
    ("value", "vcpus", "memory_mb"), [("3", 4, 1200), ("2", 6, 1001), ("8", 4, 1024)]
)
def test_numa_nodes_must_divide(value: str, vcpus: int, memory_mb: int) -> None:
    _rejects(r"must divide", {"hw:numa_nodes": value}, vcpus=vcpus, memory_mb=memory_mb)


def test_dedicated_pins_each_vcpu_to_its_own_cpu_on_one_host_node() -> None:
    settings = _settings({"hw:cpu_policy": "dedicated"}, vcpus=2)
    assert settings.vcpu_pins == (2, 3) and settings.memory_host_nodes == {0}
    assert settings.shared_cpus == frozenset() and settings.numa_cells == ()
    domain = _applied({"hw:cpu_policy": "dedicated"}, vcpus=2)
    assert domain.cputune == lvxml.CPUTune(
        vcpupins=[lvxml.VCPUPin(vcpu=0, cpuset="2"), lvxml.VCPUPin(vcpu=1, cpuset="3")],
        emulatorpin_cpuset="2-3",
    )
    assert domain.numatune == lvxml.NUMATune(memory_mode="strict", memory_nodeset="0")
    assert domain.vcpu_cpuset is None


def test_dedicated_guest_that_does_not_fit_node_0_goes_to_node_1() -> None:
    settings = _settings({"hw:cpu_policy": "dedicated"}, vcpus=4)
    assert settings.vcpu_pins == (4, 5, 6, 7) and settings.memory_host_nodes == {1}


def test_dedicated_numa_guest_gets_a_host_node_per_cell() -> None:
    domain = _applied({"hw:cpu_policy": "dedicated", "hw:numa_nodes": "2"}, vcpus=4, memory_mb=1024)
    assert domain.cputune is not None
    assert [p.cpuset for p in domain.cputune.vcpupins] == ["2", "3", "4", "5"]
    assert domain.numatune == lvxml.NUMATune(
        memory_mode="strict",
        memory_nodeset="0-1",
        memnodes=[
            lvxml.NUMAMemNode(cellid=0, mode="strict", nodeset="0"),
            lvxml.NUMAMemNode(cellid=1, mode="strict", nodeset="1"),
        ],
    )


def test_dedicated_skips_cpus_other_guests_hold() -> None:
    host = _host(pinned_cpus=frozenset({2, 3, 4}))
    assert _settings({"hw:cpu_policy": "dedicated"}, vcpus=2, host=host).vcpu_pins == (5, 6)


def test_dedicated_without_host_numa_layout_writes_no_numatune() -> None:
    domain = _applied({"hw:cpu_policy": "dedicated"}, vcpus=2, host=_host(numa_nodes=()))
    assert domain.cputune is not None and domain.numatune is None


def test_dedicated_rejects_more_vcpus_than_the_dedicated_set() -> None:
    _rejects(
        r"7 vCPUs need 7 dedicated host CPUs; this host has 6 \(6 free\)",
        {"hw:cpu_policy": "dedicated"},
        vcpus=7,
    )
    _rejects(
        r"this host has 6 \(2 free\)",
        {"hw:cpu_policy": "dedicated"},
        vcpus=3,
        host=_host(pinned_cpus=frozenset({2, 3, 4, 5})),
    )
    _rejects(
        r"this host has 0", {"hw:cpu_policy": "dedicated"}, host=_host(dedicated_cpus=frozenset())
    )


def test_dedicated_cell_must_fit_one_host_node() -> None:
    _rejects(
        r"no host NUMA node has 5 free dedicated CPUs .* hw:numa_nodes",
        {"hw:cpu_policy": "dedicated"},
        vcpus=5,
    )


def test_shared_guest_needs_a_cpu_outside_the_dedicated_set() -> None:
    _rejects(r"every CPU of this host is dedicated", host=_host(dedicated_cpus=frozenset(range(8))))
    assert _applied().vcpu_cpuset == "0-1"


@pytest.mark.parametrize(
    ("value", "memory_mb", "expected"),
    [
        ("small", 512, None),
        ("2048", 512, 2048),
        ("1048576", 2048, 1048576),
        ("large", 2048, 1048576),
        ("large", 512, 2048),
    ],
)
def test_mem_page_size(value: str, memory_mb: int, expected: int | None) -> None:
    assert _settings({"hw:mem_page_size": value}, memory_mb=memory_mb).hugepage_kib == expected
    backing = _applied({"hw:mem_page_size": value}, memory_mb=memory_mb).memory_backing
    assert backing == (None if expected is None else lvxml.MemoryBacking(hugepage_kib=expected))


def test_mem_page_size_large_fits_each_numa_cell() -> None:
    specs = {"hw:mem_page_size": "large", "hw:numa_nodes": "2"}
    assert _settings(specs, vcpus=2, memory_mb=3072).hugepage_kib == 2048  # 1.5 GiB cells


@pytest.mark.parametrize(
    ("value", "memory_mb", "host", "match"),
    [
        ("1048576", 512, _host(), r"1048576.*is not a multiple"),
        (
            "1048576",
            2048,
            _host(hugepage_sizes_kib=frozenset({2048})),
            r"this host has huge pages of: 2048",
        ),
        ("large", 512, _host(hugepage_sizes_kib=frozenset()), r"no huge pages reserved"),
        ("large", 3, _host(), r"divides the memory"),
        ("2MB", 512, _host(), r"allowed: small, large, or a page size in KiB \(2048, 1048576\)"),
        ("4", 512, _host(), r"this host has huge pages of"),
        ("²", 512, _host(), r"allowed: small, large"),
    ],
)
def test_mem_page_size_must_exist_on_the_host(
    value: str, memory_mb: int, host: HostFacts, match: str
) -> None:
    _rejects(match, {"hw:mem_page_size": value}, memory_mb=memory_mb, host=host)


# --- CPU mode ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "cpu"),
    [
        ({"hw_cpu_mode": "host-model"}, lvxml.CPU(mode="host-model")),
        ({"hw_cpu_mode": "host-passthrough"}, lvxml.CPU(mode="host-passthrough")),
        ({"hw_cpu_mode": "maximum"}, lvxml.CPU(mode="maximum")),
        (
            {"hw_cpu_mode": "custom", "hw_cpu_model": "qemu64"},
            lvxml.CPU(mode="custom", model="qemu64"),
        ),
        ({"hw_cpu_mode": "none"}, None),
    ],
)
def test_cpu_mode(props: dict[str, str], cpu: lvxml.CPU | None) -> None:
    assert _applied({}, props).cpu == cpu


def test_maximum_and_custom_work_under_tcg() -> None:
    assert _applied({}, {"hw_cpu_mode": "maximum"}, host=_host("qemu")).cpu == lvxml.CPU(
        mode="maximum"
    )


@pytest.mark.parametrize(
    ("props", "virt_type", "match"),
    [
        ({"hw_cpu_mode": "host-passthrough"}, "qemu", r"needs virt_type kvm.*use maximum"),
        ({"hw_cpu_mode": "custom"}, "kvm", r"needs hw_cpu_model"),
        ({"hw_cpu_model": "qemu64"}, "kvm", r"hw_cpu_model='qemu64'.*needs hw_cpu_mode=custom"),
        ({"hw_cpu_mode": "custom", "hw_cpu_model": "qemu64,+vmx"}, "kvm", r"not a CPU model"),
        ({"hw_cpu_mode": "host"}, "kvm", r"allowed: host-model, host-passthrough"),
    ],
)
def test_cpu_mode_conflicts(props: dict[str, str], virt_type: str, match: str) -> None:
    _rejects(match, {}, props=props, host=_host(virt_type))


# --- disks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bus", "dev"), [("virtio", "vda"), ("scsi", "sda"), ("sata", "sda"), ("ide", "hda")]
)
def test_disk_bus_renames_the_disk_and_its_volume_record(bus: str, dev: str) -> None:
    domain = _applied({}, {"hw_disk_bus": bus})
    (disk,) = domain.devices_of(lvxml.Disk)
    assert (disk.target_dev, disk.target_bus) == (dev, bus)
    assert domain.metadata is not None and domain.metadata.volumes[0].target_dev == dev
    controllers = domain.devices_of(lvxml.Controller)
    expected = (
        [lvxml.Controller(type="scsi", index=0, model="virtio-scsi")] if bus == "scsi" else []
    )
    assert controllers == expected


def test_disk_bus_rename_skips_names_in_use_and_leaves_cdroms_alone() -> None:
    cdrom = lvxml.Disk(
        type="file",
        device="cdrom",
        source_file="/c.iso",
        target_dev="hda",
        target_bus="ide",
        readonly=True,
    )
    root = _root()
    settings = _settings({}, {"hw_disk_bus": "ide"})
    domain = _domain(settings, [root])
    domain.devices.append(cdrom)
    guest_xml.apply(domain, settings, [root, cdrom])
    assert (root.target_dev, cdrom.target_dev, cdrom.cache) == ("hdb", "hda", None)


@pytest.mark.parametrize("cache", gc.DISK_CACHES)
def test_disk_cache(cache: str) -> None:
    (disk,) = _applied({}, {"hw_disk_cache": cache}).devices_of(lvxml.Disk)
    assert disk.cache == cache


def test_disk_cache_unset_keeps_the_storages_choice() -> None:
    (disk,) = _applied({}, {}, [_root(cache="writeback")]).devices_of(lvxml.Disk)
    assert disk.cache == "writeback"


@pytest.mark.parametrize(
    ("props", "io"),
    [
        ({"hw_disk_io": "native"}, "native"),
        ({"hw_disk_io": "native", "hw_disk_cache": "directsync"}, "native"),
        ({"hw_disk_io": "threads", "hw_disk_cache": "writeback"}, "threads"),
        ({"hw_disk_io": "io_uring"}, "io_uring"),
    ],
)
def test_disk_io(props: dict[str, str], io: str) -> None:
    (disk,) = _applied({}, props).devices_of(lvxml.Disk)
    assert disk.io == io


@pytest.mark.parametrize("cache", ["writeback", "writethrough", "unsafe"])
def test_disk_io_native_needs_an_o_direct_cache(cache: str) -> None:
    _rejects(
        r"hw_disk_io='native'.*O_DIRECT.*none or directsync",
        props={"hw_disk_io": "native", "hw_disk_cache": cache},
    )


def test_storage_native_io_falls_back_when_the_image_wants_a_buffered_cache() -> None:
    root = _root(cache="none", io="native")
    (disk,) = _applied({}, {"hw_disk_cache": "writeback"}, [root]).devices_of(lvxml.Disk)
    assert (disk.cache, disk.io) == ("writeback", None)


@pytest.mark.parametrize("discard", gc.DISK_DISCARDS)
def test_disk_discard(discard: str) -> None:
    (disk,) = _applied({}, {"hw_disk_discard": discard}).devices_of(lvxml.Disk)
    assert disk.discard == discard


def test_disk_discard_unset_keeps_the_storages_choice() -> None:
    (disk,) = _applied({}, {}, [_root(discard="unmap")]).devices_of(lvxml.Disk)
    assert disk.discard == "unmap"


@pytest.mark.parametrize(
    ("props", "zeroes"),
    [
        ({"hw_disk_detect_zeroes": "off"}, "off"),
        ({"hw_disk_detect_zeroes": "on"}, "on"),
        ({"hw_disk_detect_zeroes": "unmap", "hw_disk_discard": "unmap"}, "unmap"),
    ],
)
def test_disk_detect_zeroes(props: dict[str, str], zeroes: str) -> None:
    (disk,) = _applied({}, props).devices_of(lvxml.Disk)
    assert disk.detect_zeroes == zeroes


@pytest.mark.parametrize("discard", [None, "ignore"])
def test_detect_zeroes_unmap_needs_discard_unmap(discard: str | None) -> None:
    props = {"hw_disk_detect_zeroes": "unmap"}
    if discard:
        props["hw_disk_discard"] = discard
    _rejects(r"hw_disk_detect_zeroes='unmap'.*needs hw_disk_discard=unmap", props=props)


@pytest.mark.parametrize("limit", gc.IOTUNE_LIMITS)
def test_iotune_limit(limit: str) -> None:
    settings = _settings({f"quota:disk_{limit}": "1000"})
    assert settings.disk_iotune == ((limit, 1000),)
    (disk,) = _applied({f"quota:disk_{limit}": "1000"}).devices_of(lvxml.Disk)
    assert getattr(disk, limit) == 1000
    assert all(getattr(disk, other) is None for other in gc.IOTUNE_LIMITS if other != limit)


def test_iotune_replaces_the_storages_limits_only_when_set() -> None:
    (kept,) = _applied({}, {}, [_root(read_iops_sec=5)]).devices_of(lvxml.Disk)
    assert kept.read_iops_sec == 5
    specs = {"quota:disk_total_iops_sec": "100"}
    (replaced,) = _applied(specs, {}, [_root(read_iops_sec=5)]).devices_of(lvxml.Disk)
    assert (replaced.read_iops_sec, replaced.total_iops_sec) == (None, 100)


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        (
            {"quota:disk_total_bytes_sec": "10", "quota:disk_read_bytes_sec": "5"},
            r"quota:disk_total_bytes_sec='10'.*excludes quota:disk_read_bytes_sec",
        ),
        (
            {"quota:disk_total_iops_sec": "10", "quota:disk_write_iops_sec": "5"},
            r"excludes quota:disk_write_iops_sec",
        ),
    ],
)
def test_iotune_total_excludes_read_and_write(specs: dict[str, str], match: str) -> None:
    _rejects(match, specs)


@pytest.mark.parametrize(
    "key",
    [
        "quota:disk_total_bytes_sec",
        "quota:disk_read_iops_sec",
        "hw:cpu_sockets",
        "hw:numa_nodes",
        "hw_rng:rate_bytes",
        "hw_rng:rate_period",
    ],
)
@pytest.mark.parametrize("value", ["0", "-1", "1.5", "ten", "", "0x10", "²"])
def test_bad_ints_are_rejected(key: str, value: str) -> None:
    _rejects(rf"{key}='{value}'.*must be an integer >= 1", {key: value})


# --- devices ----------------------------------------------------------------


def test_rng_on_by_default_with_a_rate_limit() -> None:
    specs = {"hw_rng:rate_bytes": "1024", "hw_rng:rate_period": "2000"}
    assert _applied(specs).devices_of(lvxml.Rng) == [
        lvxml.Rng(
            model="virtio",
            rate_bytes=1024,
            rate_period=2000,
            backend_model="random",
            backend_path="/dev/urandom",
        )
    ]
    assert _applied({"hw_rng:rate_bytes": "512"}).devices_of(lvxml.Rng)[0].rate_period is None


@pytest.mark.parametrize(
    ("value", "present"), [("true", True), ("false", False), ("No", False), ("1", True)]
)
def test_hw_rng(value: str, present: bool) -> None:
    assert bool(_applied({}, {"hw_rng": value}).devices_of(lvxml.Rng)) is present


def test_rng_rate_period_needs_rate_bytes() -> None:
    _rejects(r"hw_rng:rate_period='2000'.*needs hw_rng:rate_bytes", {"hw_rng:rate_period": "2000"})


@pytest.mark.parametrize(("value", "present"), [("yes", True), ("no", False), ("True", True)])
def test_qemu_guest_agent(value: str, present: bool) -> None:
    channels = _applied({}, {"hw_qemu_guest_agent": value}).devices_of(lvxml.Channel)
    assert bool(channels) is present
    if present:
        text = channels[0].to_string()
        assert text == (
            '<channel type="unix">\n'
            '  <target type="virtio" name="org.qemu.guest_agent.0"/>\n'
            "</channel>\n"
        )


@pytest.mark.parametrize(
    ("value", "balloon"),
    [
        ("0", lvxml.MemBalloon(model="none")),
        ("30", lvxml.MemBalloon(model="virtio", stats_period=30)),
    ],
)
def test_mem_stats_period(value: str, balloon: lvxml.MemBalloon) -> None:
    assert _applied({}, {"hw_mem_stats_period": value}).devices_of(lvxml.MemBalloon) == [balloon]


@pytest.mark.parametrize("action", gc.WATCHDOG_ACTIONS)
def test_watchdog_action(action: str) -> None:
    assert _applied({}, {"hw_watchdog_action": action}).devices_of(lvxml.Watchdog) == [
        lvxml.Watchdog(model="i6300esb", action=action)
    ]


@pytest.mark.parametrize(
    ("props", "match"),
    [
        ({"hw_rng": "maybe"}, r"hw_rng='maybe'.*allowed: yes, no"),
        ({"hw_qemu_guest_agent": "enabled"}, r"allowed: yes, no"),
        ({"hw_mem_stats_period": "-1"}, r"must be an integer >= 0"),
        ({"hw_mem_stats_period": "ten"}, r"must be an integer >= 0"),
        ({"hw_watchdog_action": "disabled"}, r"allowed: reset, poweroff, pause, none"),
        ({"hw_disk_bus": "usb"}, r"hw_disk_bus='usb'.*allowed: virtio, scsi, sata, ide"),
        ({"hw_disk_cache": "default"}, r"allowed: none, writeback"),
        ({"hw_disk_io": "aio"}, r"allowed: native, threads, io_uring"),
        ({"hw_disk_discard": "on"}, r"allowed: unmap, ignore"),
        ({"hw_disk_detect_zeroes": "yes"}, r"allowed: off, on, unmap"),
    ],
)
def test_bad_image_values_are_rejected(props: dict[str, str], match: str) -> None:
    _rejects(match, props=props)


def test_bad_cpu_policy_is_rejected() -> None:
    _rejects(r"hw:cpu_policy='mixed'.*allowed: shared, dedicated", {"hw:cpu_policy": "mixed"})


# --- keys and errors --------------------------------------------------------


@pytest.mark.parametrize(
    ("specs", "props", "match"),
    [
        ({"hw:cpu_polcy": "dedicated"}, {}, r"hw:cpu_polcy='dedicated'.*unknown key"),
        ({"quota:cpu_shares": "10"}, {}, r"quota:cpu_shares.*unknown key"),
        ({"hw_rng:allowed": "false"}, {}, r"hw_rng:allowed.*unknown key"),
        ({}, {"hw_disk_buss": "scsi"}, r"hw_disk_buss.*unknown key; known here: hw_cpu_mode"),
        ({"hw_disk_bus": "scsi"}, {}, r"hw_disk_bus='scsi'.*belongs on the image"),
        ({}, {"hw:numa_nodes": "2"}, r"hw:numa_nodes='2'.*belongs on the flavor"),
        ({}, {"quota:disk_read_iops_sec": "9"}, r"belongs on the flavor"),
    ],
)
def test_unknown_or_misplaced_keys_are_rejected(
    specs: dict[str, str], props: dict[str, str], match: str
) -> None:
    _rejects(match, specs, props=props)


def test_keys_outside_our_namespaces_are_ignored() -> None:
    specs = {"aggregate_instance_extra_specs:ssd": "true", "resources:VCPU": "2"}
    props = {"os_distro": "cirros", "hypervisor_type": "qemu", "hw": "x"}
    assert _settings(specs, props) == _settings()


def test_errors_are_one_invalid_class_with_a_stable_code() -> None:
    with pytest.raises(gc.GuestConfigError) as info:
        _settings({}, {"hw_disk_cache": "fast"})
    error = info.value
    assert isinstance(error, exception.Invalid)
    assert (error.code, error.kind) == ("invalid_guest_config", "invalid")
    assert error.kwargs == {
        "property": "hw_disk_cache",
        "value": "fast",
        "reason": "allowed: none, writeback, writethrough, directsync, unsafe",
    }
    assert error.message == (
        "Invalid guest configuration hw_disk_cache='fast': "
        "allowed: none, writeback, writethrough, directsync, unsafe"
    )
    assert error.to_dict()["code"] == "invalid_guest_config"


def test_every_key_is_documented_in_the_module_table() -> None:
    doc = guest_properties.__doc__ or ""
    assert all(f"``{key}``" in doc for key in gc.FLAVOR_KEYS | gc.IMAGE_KEYS)


def test_programming_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="not the host's"):
        gc.guest_settings(FlavorSpec("f", 1, 256, 1), {}, _host("kvm"), "qemu")
    settings = _settings()
    with pytest.raises(ValueError, match="settings are for 2"):
        guest_xml.apply(_domain(_settings(vcpus=4)), settings, [])


# --- whole domains ----------------------------------------------------------


MAXIMAL_SPECS = {
    "hw:cpu_sockets": "2",
    "hw:cpu_cores": "2",
    "hw:cpu_threads": "1",
    "hw:numa_nodes": "2",
    "hw:cpu_policy": "dedicated",
    "hw:mem_page_size": "large",
    "hw_rng:rate_bytes": "1024",
    "hw_rng:rate_period": "2000",
    "quota:disk_total_bytes_sec": "10485760",
    "quota:disk_read_iops_sec": "500",
    "quota:disk_write_iops_sec": "400",
}
MAXIMAL_PROPS = {
    "hw_cpu_mode": "custom",
    "hw_cpu_model": "qemu64",
    "hw_disk_bus": "scsi",
    "hw_disk_cache": "directsync",
    "hw_disk_io": "native",
    "hw_disk_discard": "unmap",
    "hw_disk_detect_zeroes": "unmap",
    "hw_rng": "true",
    "hw_qemu_guest_agent": "yes",
    "hw_mem_stats_period": "5",
    "hw_watchdog_action": "poweroff",
}


def _maximal() -> lvxml.Domain:
    settings = _settings(MAXIMAL_SPECS, MAXIMAL_PROPS, vcpus=4, memory_mb=2048)
    root = _root()
    guest_xml.identify(root, "root")
    domain = lvxml.Domain(
        type="kvm",
        name="cd-maximal",
        uuid=INSTANCE,
        metadata=lvxml.InstanceMetadata(
            uuid=INSTANCE,
            name="maximal",
            volumes=[lvxml.VolumeRef(id="root", backend="dir", target_dev="vda")],
        ),
        memory_kib=2048 * 1024,
        vcpus=4,
        os=lvxml.OS(type="hvm", arch="x86_64", machine="pc", boot_devices=["hd"]),
        # What the driver adds today; apply() replaces both.
        devices=[
            root,
            lvxml.MemBalloon(model="virtio", stats_period=10),
            lvxml.Rng(model="virtio", backend_model="builtin"),
        ],
    )
    guest_xml.apply(domain, settings, [root])
    return domain


def test_everything_on_validates_parses_back_and_matches_the_maximal_golden(
    tmp_path: Path,
) -> None:
    domain = _maximal()
    _validate(domain, tmp_path)
    assert domain.to_string() == (GOLDEN / "maximal.xml").read_text()


def test_shared_guest_matches_the_shared_cpus_golden(tmp_path: Path) -> None:
    settings = _settings(
        {
            "hw:cpu_threads": "2",
            "hw:mem_page_size": "2048",
            "quota:disk_read_bytes_sec": "20971520",
            "quota:disk_write_bytes_sec": "10485760",
            "quota:disk_total_iops_sec": "1000",
        },
        {
            "hw_disk_bus": "sata",
            "hw_disk_cache": "writeback",
            "hw_disk_io": "threads",
            "hw_disk_discard": "ignore",
            "hw_disk_detect_zeroes": "on",
            "hw_rng": "false",
            "hw_mem_stats_period": "0",
        },
        vcpus=2,
        memory_mb=256,
        host=_host("qemu", numa_nodes=(), dedicated_cpus=frozenset(range(2, 6))),
    )
    root = _root(source_file="/var/lib/cd/root.qcow2")
    domain = lvxml.Domain(
        type="qemu",
        name="cd-shared",
        metadata=lvxml.InstanceMetadata(uuid=INSTANCE, name="shared"),
        memory_kib=262144,
        vcpus=2,
        os=lvxml.OS(type="hvm", arch="x86_64", machine="pc"),
        devices=[root],
    )
    guest_xml.apply(domain, settings, [root])
    _validate(domain, tmp_path)
    assert domain.to_string() == (GOLDEN / "shared-cpus.xml").read_text()


def test_apply_is_idempotent() -> None:
    domain = _maximal()
    again = lvxml.Domain.parse(domain.to_string())
    settings = _settings(MAXIMAL_SPECS, MAXIMAL_PROPS, vcpus=4, memory_mb=2048)
    guest_xml.apply(again, settings, again.devices_of(lvxml.Disk))
    assert again == domain


@pytest.mark.parametrize("virt_type", ["kvm", "qemu", "test"])
def test_defaults_validate_for_every_virt_type(virt_type: str, tmp_path: Path) -> None:
    _validate(_applied(host=_host(virt_type)), tmp_path)
