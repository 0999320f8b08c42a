"""What the guest configuration policy knows of this host, and the cpuset syntax.

:class:`HostFacts` holds the host's CPUs, its dedicated set, its NUMA nodes,
its reserved huge page sizes and the CPUs other guests already hold, read
from libvirt's capabilities and the options; :func:`parse_cpuset` and
:func:`format_cpuset` read and write the ``"2-5,8"`` sets that libvirt and
the options use. Pure: no I/O and no libvirt calls. :mod:`.guest_config`
checks every request against these facts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from compute_driver import domain_xml as lvxml
from compute_driver.domain_xml.base import parse_xml
from compute_driver.domain_xml.checks import KIB_PER_UNIT

VIRT_TYPES = ("kvm", "qemu", "test")


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


# --- the host --------------------------------------------------------------


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
