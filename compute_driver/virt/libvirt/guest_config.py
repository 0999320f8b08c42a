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

Flavor extra specs (the operator's) use ``hw:``, ``hw_rng:`` and ``quota:``
keys; image properties (the image owner's) use ``hw_`` keys. Any key in those
namespaces that is not in the table below is an error (typo protection);
other keys are ignored. A key in the wrong place (``hw_disk_bus`` on a flavor)
is an error that says where it belongs.

.. list-table::
   :header-rows: 1
   :widths: 22 26 16 36

   * - property (where)
     - values
     - default
     - effect
   * - ``hw:cpu_sockets`` (flavor)
     - positive int
     - vCPUs / (cores x threads)
     - ``<cpu><topology sockets>``; sockets x cores x threads must equal the vCPUs
   * - ``hw:cpu_cores`` (flavor)
     - positive int
     - vCPUs / (sockets x threads)
     - ``<cpu><topology cores>``
   * - ``hw:cpu_threads`` (flavor)
     - positive int
     - 1
     - ``<cpu><topology threads>``; no ``<topology>`` when none of the three is set
   * - ``hw:numa_nodes`` (flavor)
     - positive int dividing the vCPUs and the memory MiB
     - unset: no guest NUMA
     - ``<cpu><numa>``: vCPUs and memory split evenly over the cells
   * - ``hw:cpu_policy`` (flavor)
     - shared, dedicated
     - shared
     - dedicated: ``<cputune>`` pins each vCPU to its own free CPU of the host's dedicated set, the
       emulator to their union, and ``<numatune>`` is strict on their host nodes (when the host's
       NUMA layout is known); more vCPUs than free dedicated CPUs is an error. shared: ``<vcpu
       cpuset>`` keeps the vCPUs off the dedicated set
   * - ``hw:mem_page_size`` (flavor)
     - small, large, or a page size in KiB (2048, 1048576)
     - small
     - ``<memoryBacking><hugepages><page>``; the size must be reserved on the host and divide each
       cell's memory; large takes the largest that does
   * - ``hw_rng:rate_bytes`` (flavor)
     - positive int
     - unlimited
     - ``<rng><rate bytes>``
   * - ``hw_rng:rate_period`` (flavor)
     - positive int (ms); needs rate_bytes
     - 1000 (libvirt's)
     - ``<rng><rate period>``
   * - ``quota:disk_total_bytes_sec`` (flavor)
     - positive int; excludes the read/write bytes limits
     - unlimited
     - ``<iotune><total_bytes_sec>`` on every instance disk (as do the five below)
   * - ``quota:disk_read_bytes_sec`` (flavor)
     - positive int
     - unlimited
     - ``<iotune><read_bytes_sec>``
   * - ``quota:disk_write_bytes_sec`` (flavor)
     - positive int
     - unlimited
     - ``<iotune><write_bytes_sec>``
   * - ``quota:disk_total_iops_sec`` (flavor)
     - positive int; excludes the read/write iops limits
     - unlimited
     - ``<iotune><total_iops_sec>``
   * - ``quota:disk_read_iops_sec`` (flavor)
     - positive int
     - unlimited
     - ``<iotune><read_iops_sec>``
   * - ``quota:disk_write_iops_sec`` (flavor)
     - positive int
     - unlimited
     - ``<iotune><write_iops_sec>``
   * - ``hw_cpu_mode`` (image)
     - host-model, host-passthrough (kvm only), custom, maximum, none
     - kvm: host-model; qemu (TCG) and test: none
     - ``<cpu mode>``; none writes no mode, and no ``<cpu>`` unless topology or NUMA needs one
   * - ``hw_cpu_model`` (image)
     - a CPU model name such as qemu64; needs custom
     - unset
     - ``<cpu><model>``
   * - ``hw_disk_bus`` (image)
     - virtio, scsi, sata, ide
     - virtio
     - ``<target bus>`` of every instance disk, renamed to match (vda, sda, hda, also in the
       metadata), hot-attached volumes included (the disk settings are kept in the metadata);
       scsi adds a virtio-scsi ``<controller>``
   * - ``hw_disk_cache`` (image)
     - none, writeback, writethrough, directsync, unsafe
     - the storage's, else none
     - ``<driver cache>``
   * - ``hw_disk_io`` (image)
     - native, threads, io_uring; native needs cache none or directsync
     - unset (QEMU's threads)
     - ``<driver io>``
   * - ``hw_disk_discard`` (image)
     - unmap, ignore
     - unset (the storage's)
     - ``<driver discard>``
   * - ``hw_disk_detect_zeroes`` (image)
     - off, on, unmap; unmap needs discard unmap
     - unset (off)
     - ``<driver detect_zeroes>``
   * - ``hw_rng`` (image)
     - true, false
     - true; never for test
     - a virtio ``<rng>`` fed from /dev/urandom
   * - ``hw_qemu_guest_agent`` (image)
     - yes, no
     - no
     - the virtio ``<channel>`` ``org.qemu.guest_agent.0``
   * - ``hw_mem_stats_period`` (image)
     - int seconds >= 0; 0 = no balloon
     - 10; no balloon for test
     - ``<memballoon model='virtio'><stats period>``; 0 writes model none
   * - ``hw_watchdog_action`` (image)
     - reset, poweroff, pause, none, dump, shutdown, inject-nmi
     - unset: no watchdog
     - an i6300esb ``<watchdog action>``

Booleans also accept yes/no, true/false, 1/0 (any case).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compute_driver import exception
from compute_driver.virt.libvirt.host_facts import HostFacts


class GuestConfigError(exception.Invalid):
    """A flavor extra spec or image property that is unknown, malformed or impossible here."""

    msg_fmt = "Invalid guest configuration %(property)s=%(value)r: %(reason)s"
    code = "invalid_guest_config"


CPU_MODES = ("host-model", "host-passthrough", "custom", "maximum", "none")
CPU_POLICIES = ("shared", "dedicated")
DISK_BUSES = ("virtio", "scsi", "sata", "ide")
DISK_CACHES = ("none", "writeback", "writethrough", "directsync", "unsafe")
DISK_IOS = ("native", "threads", "io_uring")
DISK_DISCARDS = ("unmap", "ignore")
DETECT_ZEROES = ("off", "on", "unmap")
WATCHDOG_ACTIONS = ("reset", "poweroff", "pause", "none", "dump", "shutdown", "inject-nmi")
IOTUNE_LIMITS = tuple(
    f"{part}_{kind}_sec" for kind in ("bytes", "iops") for part in ("total", "read", "write")
)
DEFAULT_MEM_STATS_PERIOD = 10

FLAVOR_KEYS = frozenset(
    {
        "hw:cpu_sockets",
        "hw:cpu_cores",
        "hw:cpu_threads",
        "hw:numa_nodes",
        "hw:cpu_policy",
        "hw:mem_page_size",
        "hw_rng:rate_bytes",
        "hw_rng:rate_period",
    }
    | {f"quota:disk_{limit}" for limit in IOTUNE_LIMITS}
)
IMAGE_KEYS = frozenset(
    {
        "hw_cpu_mode",
        "hw_cpu_model",
        "hw_disk_bus",
        "hw_disk_cache",
        "hw_disk_io",
        "hw_disk_discard",
        "hw_disk_detect_zeroes",
        "hw_rng",
        "hw_qemu_guest_agent",
        "hw_mem_stats_period",
        "hw_watchdog_action",
    }
)
_NAMESPACES = ("hw:", "hw_", "quota:")
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_CPU_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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


# --- reading properties ----------------------------------------------------


class _Props:
    """One source of properties with typed, error-raising getters."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values

    def raw(self, key: str) -> str | None:
        value = self.values.get(key)
        return None if value is None else str(value).strip()

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.raw(key)
        if value is None:
            return default
        if value not in choices:
            raise _error(key, value, "allowed: " + ", ".join(choices))
        return value

    def integer(self, key: str, minimum: int) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if not _is_count(value) or int(value) < minimum:
            raise _error(key, value, f"must be an integer >= {minimum}")
        return int(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if value.lower() not in _BOOLS:
            raise _error(key, value, "allowed: yes, no (or true, false)")
        return _BOOLS[value.lower()]


def _is_count(value: str) -> bool:
    # NOTE: str.isdigit() alone accepts "²", which int() refuses.
    return value.isascii() and value.isdigit()


def _error(key: str, value: object, reason: str) -> GuestConfigError:
    return GuestConfigError(property=key, value=str(value), reason=reason)


def _check_keys(values: Mapping[str, str], known: frozenset[str], elsewhere: str) -> None:
    """Refuse unknown keys in our namespaces; ``elsewhere`` says where the others belong."""
    other = IMAGE_KEYS if known is FLAVOR_KEYS else FLAVOR_KEYS
    for key in sorted(values):
        if key.startswith(_NAMESPACES) and key not in known:
            if key in other:
                reason = f"belongs on the {elsewhere}"
            else:
                reason = "unknown key; known here: " + ", ".join(sorted(known))
            raise _error(key, values[key], reason)


def check_property_names(
    extra_specs: Mapping[str, str] | None = None, image_properties: Mapping[str, str] | None = None
) -> None:
    """Refuse unknown or misplaced keys, without a host (for the control plane).

    :raises GuestConfigError: naming the key and where it belongs.
    """
    _check_keys(extra_specs or {}, FLAVOR_KEYS, "image (hw_* image property)")
    _check_keys(image_properties or {}, IMAGE_KEYS, "flavor (extra spec)")


# --- the policy ------------------------------------------------------------


def guest_settings(
    flavor_vcpus: int,
    flavor_memory_mb: int,
    extra_specs: Mapping[str, str],
    image_properties: Mapping[str, str],
    host: HostFacts,
    virt_type: str,
) -> GuestSettings:
    """Check the requests of a flavor and an image against each other and the host.

    :param flavor_vcpus: the flavor's vCPUs.
    :param flavor_memory_mb: the flavor's memory in MiB.
    :param extra_specs: the flavor's extra specs (``hw:``, ``hw_rng:``, ``quota:`` keys).
    :param image_properties: the image's properties (``hw_`` keys).
    :param host: this host's CPUs, dedicated set and huge pages.
    :param virt_type: the domain type (must be ``host.virt_type``).
    :returns: the settings :func:`.guest_xml.apply` writes.
    :raises GuestConfigError: an unknown key, a malformed value, or a request
        that conflicts with another or that this host cannot meet.
    """
    if virt_type != host.virt_type:
        raise ValueError(f"virt_type {virt_type!r} is not the host's {host.virt_type!r}")
    if flavor_vcpus < 1 or flavor_memory_mb < 1:
        raise ValueError(f"a flavor needs vCPUs and memory: {flavor_vcpus}, {flavor_memory_mb}")
    _check_keys(extra_specs, FLAVOR_KEYS, "image (hw_* image property)")
    _check_keys(image_properties, IMAGE_KEYS, "flavor (extra spec)")
    flavor, image = _Props(extra_specs), _Props(image_properties)
    memory_kib = flavor_memory_mb * 1024

    cpu_mode, cpu_model = _cpu_mode(image, virt_type)
    topology = _topology(flavor, flavor_vcpus)
    cells = _numa_cells(flavor, flavor_vcpus, flavor_memory_mb)
    hugepage_kib = _hugepages(flavor, host, [c.memory_kib for c in cells] or [memory_kib])
    policy = flavor.choice("hw:cpu_policy", CPU_POLICIES, "shared") or "shared"
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

    disk = _disk_settings(image)
    iotune = _iotune(flavor)
    rng = image.boolean("hw_rng", True) and virt_type != "test"
    rate_bytes = flavor.integer("hw_rng:rate_bytes", 1)
    rate_period = flavor.integer("hw_rng:rate_period", 1)
    if rate_period is not None and rate_bytes is None:
        raise _error("hw_rng:rate_period", rate_period, "needs hw_rng:rate_bytes")
    stats = image.integer("hw_mem_stats_period", 0)
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
        topology=topology,
        numa_cells=cells,
        cpu_policy=policy,
        vcpu_pins=pins,
        shared_cpus=shared,
        memory_host_nodes=memory_nodes,
        hugepage_kib=hugepage_kib,
        disk_iotune=iotune,
        rng=rng,
        rng_rate_bytes=rate_bytes,
        rng_rate_period=rate_period,
        qemu_guest_agent=image.boolean("hw_qemu_guest_agent", False),
        mem_stats_period=stats,
        watchdog_action=image.choice("hw_watchdog_action", WATCHDOG_ACTIONS, None),
        **disk,
    )


def _cpu_mode(image: _Props, virt_type: str) -> tuple[str, str | None]:
    # NOTE: TCG emulates host-model's features slowly or not at all: "none"
    # (QEMU's qemu64) is the safe default there.
    default = "host-model" if virt_type == "kvm" else "none"
    mode = image.choice("hw_cpu_mode", CPU_MODES, default) or default
    model = image.raw("hw_cpu_model")
    if mode == "host-passthrough" and virt_type != "kvm":
        raise _error(
            "hw_cpu_mode", mode, f"needs virt_type kvm, this host is {virt_type}; use maximum"
        )
    if mode == "custom" and model is None:
        raise _error("hw_cpu_mode", mode, "needs hw_cpu_model (e.g. qemu64)")
    if model is not None:
        if mode != "custom":
            raise _error("hw_cpu_model", model, f"needs hw_cpu_mode=custom, not {mode}")
        if not _CPU_MODEL_RE.match(model):
            raise _error("hw_cpu_model", model, "is not a CPU model name (letters, digits, _.-)")
    return mode, model


def _topology(flavor: _Props, vcpus: int) -> tuple[int, int, int] | None:
    keys = ("hw:cpu_sockets", "hw:cpu_cores", "hw:cpu_threads")
    sockets, cores, threads = (flavor.integer(key, 1) for key in keys)
    given = [key for key in keys if flavor.raw(key) is not None]
    if not given:
        return None
    threads = threads or 1
    if sockets is None and cores is None:
        cores = 1
    if sockets is None:
        sockets = max(vcpus // ((cores or 1) * threads), 1)
    if cores is None:
        cores = max(vcpus // (sockets * threads), 1)
    if sockets * cores * threads != vcpus:
        raise _error(
            ",".join(given),
            ",".join(str(flavor.raw(key)) for key in given),
            f"sockets x cores x threads = {sockets} x {cores} x {threads} = "
            f"{sockets * cores * threads}, but the flavor has {vcpus} vCPUs: "
            "the product must equal the vCPUs",
        )
    return sockets, cores, threads


def _numa_requested(flavor: _Props) -> bool:
    return flavor.raw("hw:numa_nodes") is not None


def _numa_cells(flavor: _Props, vcpus: int, memory_mb: int) -> tuple[GuestCell, ...]:
    nodes = flavor.integer("hw:numa_nodes", 1)
    count = nodes or 1
    if vcpus % count or memory_mb % count:
        raise _error(
            "hw:numa_nodes",
            count,
            f"must divide the flavor's {vcpus} vCPUs and {memory_mb} MiB of memory evenly",
        )
    per_cpu, per_kib = vcpus // count, memory_mb * 1024 // count
    return tuple(
        GuestCell(id=i, vcpus=frozenset(range(i * per_cpu, (i + 1) * per_cpu)), memory_kib=per_kib)
        for i in range(count)
    )


def _hugepages(flavor: _Props, host: HostFacts, cell_kib: list[int]) -> int | None:
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


def _disk_settings(image: _Props) -> dict[str, Any]:
    cache = image.choice("hw_disk_cache", DISK_CACHES, None)
    io = image.choice("hw_disk_io", DISK_IOS, None)
    discard = image.choice("hw_disk_discard", DISK_DISCARDS, None)
    zeroes = image.choice("hw_disk_detect_zeroes", DETECT_ZEROES, None)
    if io == "native" and (cache or "none") not in ("none", "directsync"):
        raise _error(
            "hw_disk_io",
            io,
            f"needs an O_DIRECT cache mode (hw_disk_cache none or directsync), not {cache}",
        )
    if zeroes == "unmap" and discard != "unmap":
        raise _error("hw_disk_detect_zeroes", zeroes, "needs hw_disk_discard=unmap")
    return dict(
        disk_bus=image.choice("hw_disk_bus", DISK_BUSES, "virtio"),
        disk_cache=cache,
        disk_io=io,
        disk_discard=discard,
        disk_detect_zeroes=zeroes,
    )


def _iotune(flavor: _Props) -> tuple[tuple[str, int], ...]:
    limits = {
        limit: value
        for limit in IOTUNE_LIMITS
        if (value := flavor.integer(f"quota:disk_{limit}", 1)) is not None
    }
    for kind in ("bytes", "iops"):
        total = f"total_{kind}_sec"
        both = [
            f"quota:disk_{p}_{kind}_sec" for p in ("read", "write") if f"{p}_{kind}_sec" in limits
        ]
        if total in limits and both:
            raise _error(
                f"quota:disk_{total}",
                limits[total],
                f"excludes {' and '.join(both)}: set a total or read/write limits",
            )
    return tuple(limits.items())
