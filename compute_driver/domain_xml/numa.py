"""Placement: ``<cpu><numa><cell>``, ``<cputune>``, ``<numatune>`` and ``<memoryBacking>``.

Host CPU and node sets are libvirt cpuset strings (``"2-5,8"``); the policy
that picks them lives in ``compute_driver.virt.libvirt.guest_config``.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from .base import XMLBuilder, XMLProperty, _ensure, _find, xml_children, xml_property
from .checks import KIB_PER_UNIT, check_cpuset

_NUMA_MODES = ("strict", "preferred", "interleave", "restrictive")


class _KiBAttribute(XMLProperty):
    """An integer size attribute written with ``unit='KiB'`` beside it; other units read as KiB."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, int, minimum=1, **kwargs)

    def read(self, node: etree._Element) -> Any:
        el = _find(node, self.names)
        raw = None if el is None or self.attr is None else el.get(self.attr)
        if raw is None or el is None:
            return None
        unit = el.get("unit", "KiB")
        if unit not in KIB_PER_UNIT:
            raise self.fail(unit, "is not a memory unit this builder reads")
        return self.from_text(raw) * KIB_PER_UNIT[unit]

    def write(self, node: etree._Element, value: Any) -> None:
        if value is not None and self.attr is not None:
            el = _ensure(node, self.names)
            el.set(self.attr, str(value))
            el.set("unit", "KiB")


def _kib_attribute(path: str, **kwargs: Any) -> Any:
    return _KiBAttribute(path, **kwargs)


def _cpuset(path: str, **kwargs: Any) -> Any:
    return xml_property(path, check=check_cpuset, **kwargs)


class NUMACell(XMLBuilder):
    """``<cell id cpus memory unit='KiB'/>``: one guest NUMA node (its vCPUs and memory)."""

    XML_NAME = "cell"

    id: int | None = xml_property("./@id", int, required=True, minimum=0)
    cpus: str | None = _cpuset("./@cpus", required=True)
    memory_kib: int | None = _kib_attribute("./@memory", required=True)


class VCPUPin(XMLBuilder):
    """``<vcpupin vcpu cpuset/>``: the host CPUs one vCPU may run on."""

    XML_NAME = "vcpupin"

    vcpu: int | None = xml_property("./@vcpu", int, required=True, minimum=0)
    cpuset: str | None = _cpuset("./@cpuset", required=True)


class CPUTune(XMLBuilder):
    """``<cputune>``: vCPU pins and the emulator threads' host CPUs."""

    XML_NAME = "cputune"

    vcpupins: list[VCPUPin] = xml_children(VCPUPin)
    emulatorpin_cpuset: str | None = _cpuset("./emulatorpin/@cpuset")

    def _validate(self) -> None:
        vcpus = [pin.vcpu for pin in self.vcpupins]
        if len(set(vcpus)) != len(vcpus):
            raise self.error(f"a vCPU is pinned twice: {vcpus}")


class NUMAMemNode(XMLBuilder):
    """``<memnode cellid mode nodeset/>``: the host nodes backing one guest cell's memory."""

    XML_NAME = "memnode"

    cellid: int | None = xml_property("./@cellid", int, required=True, minimum=0)
    mode: str | None = xml_property("./@mode", required=True, choices=_NUMA_MODES)
    nodeset: str | None = _cpuset("./@nodeset", required=True)


class NUMATune(XMLBuilder):
    """``<numatune>``: host NUMA nodes for the guest's memory, whole and per guest cell."""

    XML_NAME = "numatune"

    memory_mode: str | None = xml_property("./memory/@mode", choices=_NUMA_MODES)
    memory_nodeset: str | None = _cpuset("./memory/@nodeset")
    memnodes: list[NUMAMemNode] = xml_children(NUMAMemNode)

    def _validate(self) -> None:
        if self.memory_mode is not None and self.memory_nodeset is None:
            raise self.error("memory_mode needs memory_nodeset")


class MemoryBacking(XMLBuilder):
    """``<memoryBacking>``: guest memory from huge pages of ``hugepage_kib`` KiB."""

    XML_NAME = "memoryBacking"

    hugepage_kib: int | None = _kib_attribute("./hugepages/page/@size")
