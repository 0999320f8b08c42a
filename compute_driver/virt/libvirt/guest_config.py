"""Guest configuration policy: flavor extra specs and image properties to domain settings.

Two pure steps, no I/O and no libvirt calls:

1. :func:`guest_settings` checks every request against the flavor and the
   host and returns a frozen :class:`GuestSettings`, or raises one
   :class:`GuestConfigError` naming the property, its value and what is
   allowed. Run it before anything is created, so conflicting or impossible
   requests fail fast.
2. :func:`.guest_xml.apply` writes those settings into a :class:`~.xml.Domain`.

What is known of the host (CPUs, the dedicated set, NUMA nodes, huge pages)
is a :class:`~.host_facts.HostFacts`.

The keys, the values each allows, their defaults and effects are the table
of :mod:`compute_driver.guest_properties`, which also checks every value
that needs no host (the scheduler runs the same checks at flavor create and
image import); this module is the policy that needs one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from compute_driver.guest_properties import (
    CPU_MODES,
    CPU_POLICIES,
    DETECT_ZEROES,
    DISK_BUSES,
    DISK_CACHES,
    DISK_DISCARDS,
    DISK_IOS,
    FLAVOR_KEYS,
    IMAGE_KEYS,
    IOTUNE_LIMITS,
    WATCHDOG_ACTIONS,
    GuestConfigError,
    Properties,
    _error,
    _is_count,
    check_keys,
    check_property_names,
    cpu_request,
    disk_settings,
    iotune,
    numa_node_count,
    rng_rate,
    topology,
)
from compute_driver.objects import FlavorSpec
from compute_driver.virt.libvirt.host_facts import HostFacts

# NOTE: the names of the property tables are re-exported: callers and tests
# knew them here before they moved to the neutral module.
__all__ = [
    "CPU_MODES",
    "CPU_POLICIES",
    "DETECT_ZEROES",
    "DISK_BUSES",
    "DISK_CACHES",
    "DISK_DISCARDS",
    "DISK_IOS",
    "FLAVOR_KEYS",
    "IMAGE_KEYS",
    "IOTUNE_LIMITS",
    "WATCHDOG_ACTIONS",
    "DiskSettings",
    "GuestCell",
    "GuestConfigError",
    "GuestSettings",
    "check_property_names",
    "guest_settings",
]

DEFAULT_MEM_STATS_PERIOD = 10


# --- outputs ---------------------------------------------------------------


@dataclass(frozen=True)
class GuestCell:
    """One guest NUMA node: its vCPUs, its memory, and the host nodes backing it (if pinned)."""

    id: int
    vcpus: frozenset[int]
    memory_kib: int
    host_nodes: frozenset[int] = frozenset()


@dataclass(frozen=True)
class DiskSettings:
    """What the flavor and image ask of every disk of a guest.

    One value for the root disk and every volume, at define and at hot
    attach: a volume looks the same to the guest from attach to detach.
    """

    bus: str = "virtio"
    cache: str | None = None
    io: str | None = None
    discard: str | None = None
    detect_zeroes: str | None = None
    iotune: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class GuestSettings:
    """Every decision :func:`guest_settings` made; :func:`.guest_xml.apply` writes them.

    ``cpu_mode`` "none" means no mode. ``vcpu_pins[i]`` is the host CPU of
    vCPU ``i`` (empty: not pinned). ``shared_cpus`` is where unpinned vCPUs
    may run (empty: anywhere). ``memory_host_nodes`` empty means no
    ``<numatune>``. ``mem_stats_period`` None means no ``<memballoon>``.
    """

    virt_type: str
    vcpus: int
    memory_kib: int
    cpu_mode: str
    cpu_model: str | None = None
    topology: tuple[int, int, int] | None = None
    numa_cells: tuple[GuestCell, ...] = ()
    cpu_policy: str = "shared"
    vcpu_pins: tuple[int, ...] = ()
    shared_cpus: frozenset[int] = frozenset()
    memory_host_nodes: frozenset[int] = frozenset()
    hugepage_kib: int | None = None
    disk_bus: str = "virtio"
    disk_cache: str | None = None
    disk_io: str | None = None
    disk_discard: str | None = None
    disk_detect_zeroes: str | None = None
    disk_iotune: tuple[tuple[str, int], ...] = ()
    rng: bool = True
    rng_rate_bytes: int | None = None
    rng_rate_period: int | None = None
    qemu_guest_agent: bool = False
    mem_stats_period: int | None = DEFAULT_MEM_STATS_PERIOD
    watchdog_action: str | None = None

    @property
    def disks(self) -> DiskSettings:
        """The settings every disk of the guest gets."""
        return DiskSettings(
            bus=self.disk_bus,
            cache=self.disk_cache,
            io=self.disk_io,
            discard=self.disk_discard,
            detect_zeroes=self.disk_detect_zeroes,
            iotune=self.disk_iotune,
        )


# --- the policy ------------------------------------------------------------


def guest_settings(
    flavor_spec: FlavorSpec,
    image_properties: Mapping[str, str],
    host: HostFacts,
    virt_type: str,
) -> GuestSettings:
    """Check the requests of a flavor and an image against each other and the host.

    :param flavor_spec: the flavor as copied into the instance: its vCPUs,
        memory (MiB) and extra specs (``hw:``, ``hw_rng:``, ``quota:`` keys).
    :param image_properties: the image's properties (``hw_`` keys).
    :param host: this host's CPUs, dedicated set and huge pages.
    :param virt_type: the domain type (must be ``host.virt_type``).
    :returns: the settings :func:`.guest_xml.apply` writes.
    :raises GuestConfigError: an unknown key, a malformed value, or a request
        that conflicts with another or that this host cannot meet.
    """
    flavor_vcpus, flavor_memory_mb = flavor_spec.vcpus, flavor_spec.memory_mb
    extra_specs = flavor_spec.extra_specs
    if virt_type != host.virt_type:
        raise ValueError(f"virt_type {virt_type!r} is not the host's {host.virt_type!r}")
    if flavor_vcpus < 1 or flavor_memory_mb < 1:
        raise ValueError(f"a flavor needs vCPUs and memory: {flavor_vcpus}, {flavor_memory_mb}")
    check_keys(extra_specs, FLAVOR_KEYS, "image (hw_* image property)")
    check_keys(image_properties, IMAGE_KEYS, "flavor (extra spec)")
    flavor, image = Properties(extra_specs), Properties(image_properties)
    memory_kib = flavor_memory_mb * 1024

    cpu_mode, cpu_model = _cpu_mode(image, virt_type)
    cpu_topology = topology(flavor, flavor_vcpus)
    cells = _numa_cells(flavor, flavor_vcpus, flavor_memory_mb)
    hugepage_kib = _hugepages(flavor, host, [c.memory_kib for c in cells] or [memory_kib])
    policy = flavor.choice("hw:cpu_policy", "shared") or "shared"
    pins: tuple[int, ...] = ()
    shared: frozenset[int] = frozenset()
    if policy == "dedicated":
        pins, cells = _pin(host, flavor_vcpus, cells)
    elif host.dedicated_cpus:
        shared = frozenset(range(host.cpus)) - host.dedicated_cpus
        if not shared:
            raise _error("hw:cpu_policy", policy, "every CPU of this host is dedicated")
    memory_nodes = frozenset().union(*(c.host_nodes for c in cells))
    if len(cells) == 1 and not _numa_requested(flavor):
        cells = ()  # the single cell only carried the placement

    disk = disk_settings(image)
    disk_iotune = iotune(flavor)
    rng = image.boolean("hw_rng", True) and virt_type != "test"
    rate_bytes, rate_period = rng_rate(flavor)
    stats = image.integer("hw_mem_stats_period")
    if virt_type == "test":
        stats = None  # libvirt's test driver runs no guest: no balloon
    elif stats is None:
        stats = DEFAULT_MEM_STATS_PERIOD
    return GuestSettings(
        virt_type=virt_type,
        vcpus=flavor_vcpus,
        memory_kib=memory_kib,
        cpu_mode=cpu_mode,
        cpu_model=cpu_model,
        topology=cpu_topology,
        numa_cells=cells,
        cpu_policy=policy,
        vcpu_pins=pins,
        shared_cpus=shared,
        memory_host_nodes=memory_nodes,
        hugepage_kib=hugepage_kib,
        disk_iotune=disk_iotune,
        rng=rng,
        rng_rate_bytes=rate_bytes,
        rng_rate_period=rate_period,
        qemu_guest_agent=image.boolean("hw_qemu_guest_agent", False),
        mem_stats_period=stats,
        watchdog_action=image.choice("hw_watchdog_action", None),
        **disk,
    )


def _cpu_mode(image: Properties, virt_type: str) -> tuple[str, str | None]:
    # NOTE: TCG emulates host-model's features slowly or not at all: "none"
    # (QEMU's qemu64) is the safe default there.
    default = "host-model" if virt_type == "kvm" else "none"
    mode, model = cpu_request(image)
    mode = mode or default
    if mode == "host-passthrough" and virt_type != "kvm":
        raise _error(
            "hw_cpu_mode", mode, f"needs virt_type kvm, this host is {virt_type}; use maximum"
        )
    return mode, model


def _numa_requested(flavor: Properties) -> bool:
    return flavor.raw("hw:numa_nodes") is not None


def _numa_cells(flavor: Properties, vcpus: int, memory_mb: int) -> tuple[GuestCell, ...]:
    count = numa_node_count(flavor, vcpus, memory_mb)
    per_cpu, per_kib = vcpus // count, memory_mb * 1024 // count
    return tuple(
        GuestCell(id=i, vcpus=frozenset(range(i * per_cpu, (i + 1) * per_cpu)), memory_kib=per_kib)
        for i in range(count)
    )


def _hugepages(flavor: Properties, host: HostFacts, cell_kib: list[int]) -> int | None:
    key = "hw:mem_page_size"
    value = flavor.raw(key)
    if value is None or value == "small":
        return None
    have = sorted(host.hugepage_sizes_kib, reverse=True)
    have_text = ", ".join(map(str, sorted(have))) or "none"
    if value == "large":
        if not have:
            raise _error(key, value, "this host has no huge pages reserved")
        for size in have:
            if all(kib % size == 0 for kib in cell_kib):
                return size
        raise _error(
            key, value, f"no huge page size of this host ({have_text} KiB) divides the memory"
        )
    if not _is_count(value):
        raise _error(key, value, f"allowed: small, large, or a page size in KiB ({have_text})")
    size = int(value)
    if size not in host.hugepage_sizes_kib:
        raise _error(key, value, f"this host has huge pages of: {have_text} (KiB)")
    if any(kib % size for kib in cell_kib):
        raise _error(
            key,
            value,
            f"the memory per NUMA cell ({cell_kib[0]} KiB) is not a multiple of {size} KiB",
        )
    return size


def _pin(
    host: HostFacts, vcpus: int, cells: tuple[GuestCell, ...]
) -> tuple[tuple[int, ...], tuple[GuestCell, ...]]:
    """One free dedicated CPU per vCPU; each guest cell on one host node when nodes are known."""
    free = sorted(host.dedicated_cpus - host.pinned_cpus)
    if vcpus > len(free):
        raise _error(
            "hw:cpu_policy",
            "dedicated",
            f"{vcpus} vCPUs need {vcpus} dedicated host CPUs; this host has "
            f"{len(host.dedicated_cpus)} ({len(free)} free)",
        )
    pins: dict[int, int] = {}
    placed: list[GuestCell] = []
    for cell in cells:
        if host.numa_nodes:
            node = next(
                (
                    n
                    for n, cpus in enumerate(host.numa_nodes)
                    if len(cpus & set(free)) >= len(cell.vcpus)
                ),
                None,
            )
            if node is None:
                raise _error(
                    "hw:cpu_policy",
                    "dedicated",
                    f"no host NUMA node has {len(cell.vcpus)} free dedicated CPUs for "
                    f"guest NUMA cell {cell.id}; more hw:numa_nodes would split the guest",
                )
            chosen = sorted(host.numa_nodes[node] & set(free))[: len(cell.vcpus)]
            cell = GuestCell(cell.id, cell.vcpus, cell.memory_kib, frozenset({node}))
        else:
            chosen = free[: len(cell.vcpus)]
        free = [cpu for cpu in free if cpu not in chosen]
        pins.update(zip(sorted(cell.vcpus), chosen, strict=True))
        placed.append(cell)
    return tuple(pins[v] for v in range(vcpus)), tuple(placed)
