"""Flavor extra specs and image properties: the keys we know and the values each allows.

Neutral and pure (no I/O, nothing of ours but :mod:`compute_driver.exception`):
the scheduler checks a flavor (:func:`check_flavor`) when it is created and an
image (:func:`check_image`) when it is imported, so that a value no host could
ever build is refused with one line instead of ending every server built from
it in ERROR; :mod:`compute_driver.virt.libvirt.guest_config` reads the same
values through :class:`Properties` and decides, per host, what they become.
What this module checks needs only the properties and the flavor's size;
what depends on a host (huge pages reserved, dedicated CPUs, virt_type) is
guest_config's.

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
     - int 1-256
     - vCPUs / (cores x threads)
     - ``<cpu><topology sockets>``; sockets x cores x threads must equal the vCPUs
   * - ``hw:cpu_cores`` (flavor)
     - int 1-256
     - vCPUs / (sockets x threads)
     - ``<cpu><topology cores>``
   * - ``hw:cpu_threads`` (flavor)
     - int 1-256
     - 1
     - ``<cpu><topology threads>``; no ``<topology>`` when none of the three is set
   * - ``hw:numa_nodes`` (flavor)
     - int 1-128 (QEMU's limit) dividing the vCPUs and the memory MiB
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
     - small, large, or a page size in KiB, a power of two from 4 (2048, 1048576)
     - small
     - ``<memoryBacking><hugepages><page>``; the size must be reserved on the host and divide each
       cell's memory; large takes the largest that does
   * - ``hw_rng:rate_bytes`` (flavor)
     - int 1-4294967295 (libvirt's unsigned int)
     - unlimited
     - ``<rng><rate bytes>``
   * - ``hw_rng:rate_period`` (flavor)
     - int 1-4294967295 (ms); needs rate_bytes
     - 1000 (libvirt's)
     - ``<rng><rate period>``
   * - ``quota:disk_total_bytes_sec`` (flavor)
     - int 1-1000000000000000 (QEMU's limit); excludes the read/write bytes limits
     - unlimited
     - ``<iotune><total_bytes_sec>`` on every instance disk (as do the five below)
   * - ``quota:disk_read_bytes_sec`` (flavor)
     - int 1-1000000000000000
     - unlimited
     - ``<iotune><read_bytes_sec>``
   * - ``quota:disk_write_bytes_sec`` (flavor)
     - int 1-1000000000000000
     - unlimited
     - ``<iotune><write_bytes_sec>``
   * - ``quota:disk_total_iops_sec`` (flavor)
     - int 1-1000000000000000; excludes the read/write iops limits
     - unlimited
     - ``<iotune><total_iops_sec>``
   * - ``quota:disk_read_iops_sec`` (flavor)
     - int 1-1000000000000000
     - unlimited
     - ``<iotune><read_iops_sec>``
   * - ``quota:disk_write_iops_sec`` (flavor)
     - int 1-1000000000000000
     - unlimited
     - ``<iotune><write_iops_sec>``
   * - ``hw_cpu_mode`` (image)
     - host-model, host-passthrough (kvm only), custom, maximum, none
     - kvm: host-model; qemu (TCG) and test: none
     - ``<cpu mode>``; none writes no mode, and no ``<cpu>`` unless topology or NUMA needs one
   * - ``hw_cpu_model`` (image)
     - a CPU model name such as qemu64 (letters, digits, ``_.-``, at most 64); needs custom
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
     - int seconds 0-2147483647; 0 = no balloon
     - 10; no balloon for test
     - ``<memballoon model='virtio'><stats period>``; 0 writes model none
   * - ``hw_watchdog_action`` (image)
     - reset, poweroff, pause, none, dump, shutdown, inject-nmi
     - unset: no watchdog
     - an i6300esb ``<watchdog action>``

Booleans also accept yes/no, true/false, 1/0 (any case). An image's kernel
command line (``cmdline``, not a property) takes no control characters and at
most 2047 bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compute_driver import exception
from compute_driver.exception import GuestConfigError

__all__ = [
    "FLAVOR_KEYS",
    "IMAGE_KEYS",
    "GuestConfigError",
    "Properties",
    "check_flavor",
    "check_image",
    "check_property_names",
]

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
#: The most vCPUs a flavor has (the API schema's bound), so any topology factor.
MAX_TOPOLOGY = 256
#: QEMU's MAX_NODES: a guest has at most this many NUMA nodes.
MAX_NUMA_NODES = 128
#: libvirt keeps rng rates in an unsigned int.
MAX_UINT = 2**32 - 1
MAX_INT = 2**31 - 1
#: QEMU's THROTTLE_VALUE_MAX: a larger iotune limit fails the domain's start.
MAX_IOTUNE = 10**15
#: The kernel's COMMAND_LINE_SIZE on x86 (and the API schema's bound).
MAX_CMDLINE = 2048
MAX_CPU_MODEL = 64
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_CPU_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: C0 controls, DEL and C1 controls: nothing a kernel command line needs, and
#: an escape sequence there would reach operators' terminals (image show).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMESPACES = ("hw:", "hw_", "quota:")


@dataclass(frozen=True)
class Rule:
    """What one key allows: one of ``choices``, an integer in a range, a boolean, a name."""

    kind: str  # "choice", "int", "bool", "cpu_model" or "page_size"
    choices: tuple[str, ...] = ()
    minimum: int = 1
    maximum: int = MAX_UINT

    def parse(self, key: str, value: str) -> Any:
        """The typed value of ``value`` (stripped).

        :raises GuestConfigError: naming the key, the value and what is allowed.
        """
        if self.kind == "choice":
            if value not in self.choices:
                raise _error(key, value, "allowed: " + ", ".join(self.choices))
            return value
        if self.kind == "int":
            if not _is_count(value) or not self.minimum <= int(value) <= self.maximum:
                raise _error(
                    key, value, f"must be an integer >= {self.minimum} and <= {self.maximum}"
                )
            return int(value)
        if self.kind == "bool":
            if value.lower() not in _BOOLS:
                raise _error(key, value, "allowed: yes, no (or true, false)")
            return _BOOLS[value.lower()]
        if self.kind == "cpu_model":
            if len(value) > MAX_CPU_MODEL or not _CPU_MODEL_RE.fullmatch(value):
                raise _error(
                    key,
                    value,
                    f"is not a CPU model name (letters, digits, _.-; at most {MAX_CPU_MODEL})",
                )
            return value
        # page_size: small, large, or a size in KiB
        if value in ("small", "large"):
            return value
        if not _is_count(value) or int(value) < 4 or int(value) & (int(value) - 1):
            raise _error(
                key, value, "allowed: small, large, or a page size in KiB (a power of two >= 4)"
            )
        if int(value) > MAX_UINT:
            raise _error(key, value, f"a page size in KiB is at most {MAX_UINT}")
        return value


def _choice(*choices: str) -> Rule:
    return Rule("choice", choices=choices)


def _int(minimum: int, maximum: int) -> Rule:
    return Rule("int", minimum=minimum, maximum=maximum)


FLAVOR_RULES: Mapping[str, Rule] = {
    "hw:cpu_sockets": _int(1, MAX_TOPOLOGY),
    "hw:cpu_cores": _int(1, MAX_TOPOLOGY),
    "hw:cpu_threads": _int(1, MAX_TOPOLOGY),
    "hw:numa_nodes": _int(1, MAX_NUMA_NODES),
    "hw:cpu_policy": _choice(*CPU_POLICIES),
    "hw:mem_page_size": Rule("page_size"),
    "hw_rng:rate_bytes": _int(1, MAX_UINT),
    "hw_rng:rate_period": _int(1, MAX_UINT),
    **{f"quota:disk_{limit}": _int(1, MAX_IOTUNE) for limit in IOTUNE_LIMITS},
}
IMAGE_RULES: Mapping[str, Rule] = {
    "hw_cpu_mode": _choice(*CPU_MODES),
    "hw_cpu_model": Rule("cpu_model"),
    "hw_disk_bus": _choice(*DISK_BUSES),
    "hw_disk_cache": _choice(*DISK_CACHES),
    "hw_disk_io": _choice(*DISK_IOS),
    "hw_disk_discard": _choice(*DISK_DISCARDS),
    "hw_disk_detect_zeroes": _choice(*DETECT_ZEROES),
    "hw_rng": Rule("bool"),
    "hw_qemu_guest_agent": Rule("bool"),
    "hw_mem_stats_period": _int(0, MAX_INT),
    "hw_watchdog_action": _choice(*WATCHDOG_ACTIONS),
}
FLAVOR_KEYS = frozenset(FLAVOR_RULES)
IMAGE_KEYS = frozenset(IMAGE_RULES)
_RULES = {**FLAVOR_RULES, **IMAGE_RULES}


# --- reading properties ----------------------------------------------------


class Properties:
    """One source of properties (a flavor's or an image's) with typed, error-raising getters.

    Each getter parses by the key's :class:`Rule`; an absent key gives the default.
    """

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values

    def raw(self, key: str) -> str | None:
        value = self.values.get(key)
        return None if value is None else str(value).strip()

    def _parsed(self, key: str) -> Any:
        value = self.raw(key)
        return None if value is None else _RULES[key].parse(key, value)

    def choice(self, key: str, default: str | None) -> str | None:
        value = self._parsed(key)
        return default if value is None else str(value)

    def integer(self, key: str) -> int | None:
        value = self._parsed(key)
        return None if value is None else int(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._parsed(key)
        return default if value is None else bool(value)

    def check_values(self) -> None:
        """Parse every known key present, in name order.

        :raises GuestConfigError: the first malformed or out-of-range value.
        """
        for key in sorted(self.values):
            if key in _RULES:
                self._parsed(key)


def _is_count(value: str) -> bool:
    # NOTE: str.isdigit() alone accepts "²", which int() refuses.
    return value.isascii() and value.isdigit()


def _error(key: str, value: object, reason: str) -> GuestConfigError:
    text = str(value)
    # NOTE: the value is echoed (repr-escaped) in a one-line error; a 2 KiB
    # command line need not be echoed whole.
    if len(text) > 80:
        text = text[:77] + "..."
    return exception.GuestConfigError(property=key, value=text, reason=reason)


def check_keys(values: Mapping[str, str], known: frozenset[str], elsewhere: str) -> None:
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
    """Refuse unknown or misplaced keys.

    :raises GuestConfigError: naming the key and where it belongs.
    """
    check_keys(extra_specs or {}, FLAVOR_KEYS, "image (hw_* image property)")
    check_keys(image_properties or {}, IMAGE_KEYS, "flavor (extra spec)")


# --- what a flavor or an image alone decides ---------------------------------


def topology(flavor: Properties, vcpus: int) -> tuple[int, int, int] | None:
    """(sockets, cores, threads), the missing ones filled in; None when none is set.

    :raises GuestConfigError: the product is not the flavor's vCPUs.
    """
    keys = ("hw:cpu_sockets", "hw:cpu_cores", "hw:cpu_threads")
    sockets, cores, threads = (flavor.integer(key) for key in keys)
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


def numa_node_count(flavor: Properties, vcpus: int, memory_mb: int) -> int:
    """How many guest NUMA cells (1 when unset).

    :raises GuestConfigError: the count does not divide the vCPUs and the memory.
    """
    count = flavor.integer("hw:numa_nodes") or 1
    if vcpus % count or memory_mb % count:
        raise _error(
            "hw:numa_nodes",
            count,
            f"must divide the flavor's {vcpus} vCPUs and {memory_mb} MiB of memory evenly",
        )
    return count


def rng_rate(flavor: Properties) -> tuple[int | None, int | None]:
    """(bytes, period) of the guest's rng rate limit.

    :raises GuestConfigError: a period without bytes.
    """
    rate_bytes = flavor.integer("hw_rng:rate_bytes")
    rate_period = flavor.integer("hw_rng:rate_period")
    if rate_period is not None and rate_bytes is None:
        raise _error("hw_rng:rate_period", rate_period, "needs hw_rng:rate_bytes")
    return rate_bytes, rate_period


def iotune(flavor: Properties) -> tuple[tuple[str, int], ...]:
    """The disk limits the flavor sets, as (libvirt iotune name, value) pairs.

    :raises GuestConfigError: a total limit next to a read or write one.
    """
    limits = {
        limit: value
        for limit in IOTUNE_LIMITS
        if (value := flavor.integer(f"quota:disk_{limit}")) is not None
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


def cpu_request(image: Properties) -> tuple[str | None, str | None]:
    """(hw_cpu_mode, hw_cpu_model) as the image sets them (None: unset).

    :raises GuestConfigError: custom without a model, or a model without custom.
    """
    mode = image.choice("hw_cpu_mode", None)
    model = image.choice("hw_cpu_model", None)
    if mode == "custom" and model is None:
        raise _error("hw_cpu_mode", mode, "needs hw_cpu_model (e.g. qemu64)")
    if model is not None and mode != "custom":
        raise _error("hw_cpu_model", model, f"needs hw_cpu_mode=custom, not {mode or 'unset'}")
    return mode, model


def disk_settings(image: Properties) -> dict[str, Any]:
    """The image's disk bus and driver settings (GuestSettings field names).

    :raises GuestConfigError: native I/O with a buffered cache, or zero
        detection by unmap without discard.
    """
    cache = image.choice("hw_disk_cache", None)
    io = image.choice("hw_disk_io", None)
    discard = image.choice("hw_disk_discard", None)
    zeroes = image.choice("hw_disk_detect_zeroes", None)
    if io == "native" and (cache or "none") not in ("none", "directsync"):
        raise _error(
            "hw_disk_io",
            io,
            f"needs an O_DIRECT cache mode (hw_disk_cache none or directsync), not {cache}",
        )
    if zeroes == "unmap" and discard != "unmap":
        raise _error("hw_disk_detect_zeroes", zeroes, "needs hw_disk_discard=unmap")
    return dict(
        disk_bus=image.choice("hw_disk_bus", "virtio"),
        disk_cache=cache,
        disk_io=io,
        disk_discard=discard,
        disk_detect_zeroes=zeroes,
    )


# --- the checks at the door --------------------------------------------------


def check_flavor(vcpus: int, memory_mb: int, extra_specs: Mapping[str, str] | None) -> None:
    """Refuse a flavor whose extra specs no host could build.

    :param vcpus: the flavor's vCPUs.
    :param memory_mb: the flavor's memory in MiB.
    :param extra_specs: its ``hw:``, ``hw_rng:`` and ``quota:`` keys (others pass).
    :raises GuestConfigError: an unknown or misplaced key, a malformed or
        out-of-range value, or values that contradict each other or the size.
    """
    specs = extra_specs or {}
    check_keys(specs, FLAVOR_KEYS, "image (hw_* image property)")
    flavor = Properties(specs)
    flavor.check_values()
    topology(flavor, vcpus)
    numa_node_count(flavor, vcpus, memory_mb)
    rng_rate(flavor)
    iotune(flavor)


def check_image(properties: Mapping[str, str] | None, cmdline: str | None = None) -> None:
    """Refuse image properties (and a kernel command line) no host could build.

    :param properties: the image's ``hw_`` keys (others pass).
    :param cmdline: the kernel command line, if the image has a kernel.
    :raises GuestConfigError: an unknown or misplaced key, a malformed value,
        values that contradict each other, or a command line with control
        characters or longer than the kernel takes.
    """
    props = properties or {}
    check_keys(props, IMAGE_KEYS, "flavor (extra spec)")
    image = Properties(props)
    image.check_values()
    cpu_request(image)
    disk_settings(image)
    if cmdline is not None:
        if _CONTROL_RE.search(cmdline):
            raise _error("cmdline", cmdline, "control characters are not allowed")
        if len(cmdline.encode()) > MAX_CMDLINE - 1:
            raise _error("cmdline", cmdline, f"the kernel takes at most {MAX_CMDLINE - 1} bytes")
