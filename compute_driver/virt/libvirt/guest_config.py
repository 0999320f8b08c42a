"""Guest configuration policy: flavor extra specs and image properties to domain settings.

Two pure steps, no I/O and no libvirt calls:

1. :func:`guest_settings` checks every request against the flavor and the
   host and returns a frozen :class:`GuestSettings`, or raises one
   :class:`GuestConfigError` naming the property, its value and what is
   allowed. Run it before anything is created, so conflicting or impossible
   requests fail fast.
2. :func:`apply` writes those settings into a :class:`~.xml.Domain`.

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
       metadata); scsi adds a virtio-scsi ``<controller>``
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

from compute_driver import exception
from compute_driver.virt.libvirt import xml as lvxml
from compute_driver.virt.libvirt.xml.base import parse_xml
from compute_driver.virt.libvirt.xml.checks import KIB_PER_UNIT


class GuestConfigError(exception.Invalid):
    """A flavor extra spec or image property that is unknown, malformed or impossible here."""

    msg_fmt = "Invalid guest configuration %(property)s=%(value)r: %(reason)s"
    code = "invalid_guest_config"


VIRT_TYPES = ("kvm", "qemu", "test")
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
QGA_CHANNEL = "org.qemu.guest_agent.0"
DEFAULT_MEM_STATS_PERIOD = 10
RNG_BACKEND = "/dev/urandom"
WATCHDOG_MODEL = "i6300esb"

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
_DEV_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}


# --- cpusets ---------------------------------------------------------------


def parse_cpuset(text: str) -> frozenset[int]:
    """The CPU numbers of a cpuset string such as ``"2-5,8"`` or ``"0-7,^3"``.

    An empty string is the empty set. Exclusions (``^n``) apply after all ranges.

    :raises ValueError: ``text`` is not a cpuset.
    """
    cpus: set[int] = set()
    excluded: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        if not part and text.strip() == "":
            continue
        target = excluded if part.startswith("^") else cpus
        low, dash, high = part.lstrip("^").partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{text!r} is not a cpuset (e.g. '2-5,8'): bad part {part!r}")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"{text!r} is not a cpuset: descending range {part!r}")
        target.update(range(first, last + 1))
    return frozenset(cpus - excluded)


def format_cpuset(cpus: Iterable[int]) -> str:
    """The shortest cpuset string of ``cpus``: ``{2, 3, 4, 5, 8}`` gives ``"2-5,8"``."""
    parts: list[str] = []
    run: list[int] = []
    for cpu in sorted(set(cpus)):
        if run and cpu != run[-1] + 1:
            parts.append(_run(run))
            run = []
        run.append(cpu)
    if run:
        parts.append(_run(run))
    return ",".join(parts)


def _run(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


# --- inputs and outputs ----------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    """What the policy needs to know about the host.

    :param cpus: host logical CPUs (numbered ``0..cpus-1``; offline ones count).
    :param dedicated_cpus: the CPUs set aside for pinned guests (an option,
        read with :func:`parse_cpuset`).
    :param hugepage_sizes_kib: huge page sizes with pages reserved (4 KiB pages excluded).
    :param virt_type: the domain type this host builds (kvm, qemu or test).
    :param numa_nodes: the host CPUs of each host NUMA node, indexed by node
        id (a CPU-less node is an empty set); empty when unknown (then no
        ``<numatune>`` is written).
    :param pinned_cpus: dedicated CPUs other guests already hold (see :func:`pinned_cpus`).
    """

    cpus: int
    dedicated_cpus: frozenset[int] = frozenset()
    hugepage_sizes_kib: frozenset[int] = frozenset()
    virt_type: str = "qemu"
    numa_nodes: tuple[frozenset[int], ...] = ()
    pinned_cpus: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise ValueError(f"a host has at least one CPU, not {self.cpus}")
        if self.virt_type not in VIRT_TYPES:
            raise ValueError(f"virt_type {self.virt_type!r} is not one of {VIRT_TYPES}")
        beyond = sorted(c for c in self.dedicated_cpus if not 0 <= c < self.cpus)
        if beyond:
            raise ValueError(
                f"dedicated CPUs {format_cpuset(beyond)} do not exist "
                f"(the host has CPUs 0-{self.cpus - 1})"
            )
        seen: set[int] = set()
        for node in self.numa_nodes:
            if node & seen or any(not 0 <= c < self.cpus for c in node):
                raise ValueError(f"host NUMA nodes overlap or name missing CPUs: {self.numa_nodes}")
            seen |= node

    @classmethod
    def from_capabilities(
        cls,
        capabilities_xml: str,
        *,
        virt_type: str,
        dedicated_cpus: frozenset[int] = frozenset(),
        pinned_cpus: frozenset[int] = frozenset(),
    ) -> HostFacts:
        """Read CPUs, NUMA nodes and reserved huge page sizes from ``getCapabilities()``."""
        host = parse_xml(capabilities_xml).find("host")
        if host is None:
            raise ValueError("capabilities XML has no <host>")
        cells = host.findall("./topology/cells/cell")
        by_id = {
            int(cell.get("id", "0")): frozenset(int(c.get("id", "0")) for c in cell.iter("cpu"))
            for cell in cells
        }
        # NOTE: node ids and CPU ids can have gaps (offline CPUs, CPU-less nodes).
        nodes = tuple(by_id.get(n, frozenset()) for n in range(max(by_id, default=-1) + 1))
        cpus = max((max(node) + 1 for node in nodes if node), default=0)
        base_page = min(
            (_page_kib(p) for p in host.findall("./cpu/pages")), default=4
        )  # the small page
        sizes = frozenset(
            _page_kib(p)
            for cell in cells
            for p in cell.findall("./pages")
            if int(p.text or "0") > 0 and _page_kib(p) != base_page
        )
        return cls(
            cpus=cpus or 1,
            dedicated_cpus=dedicated_cpus,
            hugepage_sizes_kib=sizes,
            virt_type=virt_type,
            numa_nodes=nodes if cpus else (),
            pinned_cpus=pinned_cpus,
        )


def _page_kib(el: etree._Element) -> int:
    return int(el.get("size", "0")) * KIB_PER_UNIT.get(el.get("unit", "KiB"), 1)


def pinned_cpus(domains: Iterable[lvxml.Domain]) -> frozenset[int]:
    """The host CPUs the vCPUs of ``domains`` are pinned to (for :attr:`HostFacts.pinned_cpus`)."""
    found: set[int] = set()
    for domain in domains:
        for pin in domain.cputune.vcpupins if domain.cputune is not None else []:
            found |= parse_cpuset(pin.cpuset or "")
    return frozenset(found)


@dataclass(frozen=True)
class GuestCell:
    """One guest NUMA node: its vCPUs, its memory, and the host nodes backing it (if pinned)."""

    id: int
    vcpus: frozenset[int]
    memory_kib: int
    host_nodes: frozenset[int] = frozenset()


@dataclass(frozen=True)
class GuestSettings:
    """Every decision :func:`guest_settings` made; :func:`apply` writes them.

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
    :returns: the settings :func:`apply` writes.
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


# --- writing the domain ----------------------------------------------------


def apply(domain: lvxml.Domain, settings: GuestSettings, disks: list[lvxml.Disk]) -> None:
    """Write ``settings`` into ``domain``: CPU, NUMA, tuning, memory backing, devices, disks.

    Replaces what it owns (``cpu``, ``vcpu_cpuset``, ``cputune``, ``numatune``,
    ``memory_backing``, any rng, memballoon, watchdog, guest agent channel
    and virtio-scsi controller), so calling it twice gives the same domain.

    :param domain: a domain with the flavor's vCPUs and memory; its
        metadata's volume target names follow renamed disks.
    :param settings: from :func:`guest_settings` for the same flavor.
    :param disks: the instance's disks (already in ``domain.devices``); cdroms
        are left alone.
    :raises ValueError: ``domain`` was sized from another flavor.
    """
    if (domain.vcpus, domain.memory_kib) != (settings.vcpus, settings.memory_kib):
        raise ValueError(
            f"domain has {domain.vcpus} vCPUs and {domain.memory_kib} KiB, "
            f"settings are for {settings.vcpus} and {settings.memory_kib}"
        )
    domain.cpu = _cpu(settings)
    domain.vcpu_cpuset = format_cpuset(settings.shared_cpus) if settings.shared_cpus else None
    domain.cputune = None
    if settings.vcpu_pins:
        domain.cputune = lvxml.CPUTune(
            vcpupins=[
                lvxml.VCPUPin(vcpu=vcpu, cpuset=str(cpu))
                for vcpu, cpu in enumerate(settings.vcpu_pins)
            ],
            emulatorpin_cpuset=format_cpuset(settings.vcpu_pins),
        )
    domain.numatune = None
    if settings.memory_host_nodes:
        domain.numatune = lvxml.NUMATune(
            memory_mode="strict",
            memory_nodeset=format_cpuset(settings.memory_host_nodes),
            memnodes=[
                lvxml.NUMAMemNode(cellid=c.id, mode="strict", nodeset=format_cpuset(c.host_nodes))
                for c in settings.numa_cells
                if c.host_nodes
            ],
        )
    domain.memory_backing = (
        lvxml.MemoryBacking(hugepage_kib=settings.hugepage_kib) if settings.hugepage_kib else None
    )
    _apply_disks(domain, settings, disks)
    domain.devices = [dev for dev in domain.devices if not _owned(dev)] + _devices(settings)


def _cpu(settings: GuestSettings) -> lvxml.CPU | None:
    mode = None if settings.cpu_mode == "none" else settings.cpu_mode
    if mode is None and settings.topology is None and not settings.numa_cells:
        return None
    sockets, cores, threads = settings.topology or (None, None, None)
    return lvxml.CPU(
        mode=mode,
        model=settings.cpu_model,
        topology_sockets=sockets,
        topology_cores=cores,
        topology_threads=threads,
        numa_cells=[
            lvxml.NUMACell(id=c.id, cpus=format_cpuset(c.vcpus), memory_kib=c.memory_kib)
            for c in settings.numa_cells
        ],
    )


def _owned(dev: lvxml.XMLBuilder) -> bool:
    if isinstance(dev, lvxml.Rng | lvxml.MemBalloon | lvxml.Watchdog):
        return True
    if isinstance(dev, lvxml.Channel):
        return dev.target_name == QGA_CHANNEL
    return isinstance(dev, lvxml.Controller) and (dev.type, dev.model) == ("scsi", "virtio-scsi")


def _devices(settings: GuestSettings) -> list[lvxml.XMLBuilder]:
    devices: list[lvxml.XMLBuilder] = []
    if settings.disk_bus == "scsi":
        devices.append(lvxml.Controller(type="scsi", index=0, model="virtio-scsi"))
    if settings.qemu_guest_agent:
        # NOTE: no source path: libvirt makes one under its channel directory.
        devices.append(lvxml.Channel(type="unix", target_type="virtio", target_name=QGA_CHANNEL))
    if settings.rng:
        devices.append(
            lvxml.Rng(
                model="virtio",
                rate_bytes=settings.rng_rate_bytes,
                rate_period=settings.rng_rate_period,
                backend_model="random",
                backend_path=RNG_BACKEND,
            )
        )
    if settings.watchdog_action is not None:
        devices.append(lvxml.Watchdog(model=WATCHDOG_MODEL, action=settings.watchdog_action))
    if settings.mem_stats_period == 0:
        devices.append(lvxml.MemBalloon(model="none"))
    elif settings.mem_stats_period is not None:
        devices.append(lvxml.MemBalloon(model="virtio", stats_period=settings.mem_stats_period))
    return devices


def _apply_disks(domain: lvxml.Domain, settings: GuestSettings, disks: list[lvxml.Disk]) -> None:
    taken = {d.target_dev for d in domain.devices_of(lvxml.Disk)}
    for disk in disks:
        if disk.device not in (None, "disk"):
            continue
        old = disk.target_dev
        prefix = _DEV_PREFIX[settings.disk_bus]
        if old is not None and not old.startswith(prefix):
            new = _free_dev(prefix, old[2:], taken)
            taken.discard(old)
            taken.add(new)
            disk.target_dev = new
            for volume in domain.metadata.volumes if domain.metadata is not None else []:
                if volume.target_dev == old:
                    volume.target_dev = new
        disk.target_bus = settings.disk_bus
        disk.cache = settings.disk_cache or disk.cache or "none"
        disk.io = settings.disk_io or disk.io
        disk.discard = settings.disk_discard or disk.discard
        disk.detect_zeroes = settings.disk_detect_zeroes or disk.detect_zeroes
        if settings.disk_iotune:  # the flavor's limits replace the storage's
            for limit in IOTUNE_LIMITS:
                setattr(disk, limit, dict(settings.disk_iotune).get(limit))
        if disk.io == "native" and disk.cache not in ("none", "directsync"):
            disk.io = None  # the storage asked for native, the image for a buffered cache


def _free_dev(prefix: str, suffix: str, taken: set[str | None]) -> str:
    if prefix + suffix not in taken:
        return prefix + suffix
    letters = "abcdefghijklmnopqrstuvwxyz"
    return next(prefix + c for c in letters if prefix + c not in taken)
