"""``<domain>`` and its fixed sections: ``<os>``, ``<features>``, ``<cpu>``, ``<clock>``.

Placement and tuning sections (``<cputune>``, ``<numatune>``, ``<memoryBacking>``)
are in :mod:`.numa`.
"""

from __future__ import annotations

import builtins
from typing import Any, TypeVar

from lxml import etree

from .base import XMLBuilder, XMLProperty, xml_child, xml_children, xml_property
from .chardev import Channel, Console, Serial
from .checks import KIB_PER_UNIT, check_cpuset, check_uuid
from .devices import Controller, MemBalloon, Rng, Watchdog
from .disk import Disk
from .interface import Interface
from .metadata import InstanceMetadata
from .numa import CPUTune, MemoryBacking, NUMACell, NUMATune

_D = TypeVar("_D", bound=XMLBuilder)
_LIFECYCLE = ("destroy", "restart", "preserve", "rename-restart")


def _check_name(value: str) -> str | None:
    if not value or "/" in value or "\n" in value:
        return "is not a domain name libvirt accepts (non-empty, no '/' or newline)"
    return None


def _check_title(value: str) -> str | None:
    return "must be one line (libvirt rejects newlines in a title)" if "\n" in value else None


class _MemoryKiB(XMLProperty):
    """``<memory unit='KiB'>`` and the same ``<currentMemory>``; reads other units as KiB."""

    def read(self, node: etree._Element) -> Any:
        el = node.find("memory")
        if el is None or el.text is None:
            return None
        unit = el.get("unit", "KiB")
        if unit not in KIB_PER_UNIT:
            raise self.fail(unit, "is not a memory unit this builder reads")
        return self.from_text(el.text) * KIB_PER_UNIT[unit]

    def write(self, node: etree._Element, value: Any) -> None:
        if value is not None:
            for tag in ("memory", "currentMemory"):
                el = etree.SubElement(node, tag, unit="KiB")
                el.text = str(value)


def _memory_kib() -> Any:
    return _MemoryKiB("./memory", int, required=True, minimum=1)


class OS(XMLBuilder):
    """``<os>``: machine type, optional direct kernel boot, boot order."""

    XML_NAME = "os"

    type: str | None = xml_property("./type", required=True, choices=("hvm",))
    arch: str | None = xml_property("./type/@arch")
    machine: str | None = xml_property("./type/@machine")
    kernel: str | None = xml_property("./kernel")
    initrd: str | None = xml_property("./initrd")
    cmdline: str | None = xml_property("./cmdline")
    boot_devices: list[str] = xml_property(
        "./boot/@dev", multi=True, choices=("hd", "cdrom", "fd", "network")
    )

    def _validate(self) -> None:
        if self.kernel is None and (self.initrd is not None or self.cmdline is not None):
            raise self.error("initrd and cmdline need kernel")


class Features(XMLBuilder):
    """``<features>``: hypervisor features; True writes the empty element."""

    XML_NAME = "features"

    acpi: bool = xml_property("./acpi", bool)
    apic: bool = xml_property("./apic", bool)


class CPU(XMLBuilder):
    """``<cpu>``: the guest CPU model, its topology and its NUMA cells.

    ``mode`` None writes no mode (libvirt's hypervisor default), for a ``<cpu>``
    that only carries topology or NUMA cells. ``model`` goes with ``custom``.
    The topology needs all three of sockets, cores and threads.
    """

    XML_NAME = "cpu"

    mode: str | None = xml_property(
        "./@mode", choices=("host-model", "host-passthrough", "custom", "maximum")
    )
    model: str | None = xml_property("./model")
    topology_sockets: int | None = xml_property("./topology/@sockets", int, minimum=1)
    topology_cores: int | None = xml_property("./topology/@cores", int, minimum=1)
    topology_threads: int | None = xml_property("./topology/@threads", int, minimum=1)
    numa_cells: list[NUMACell] = xml_children(NUMACell, path="./numa")

    def _validate(self) -> None:
        if self.mode == "custom" and self.model is None:
            raise self.error("mode 'custom' needs model")
        if self.model is not None and self.mode not in (None, "custom"):
            raise self.error(f"model needs mode 'custom', not {self.mode!r}")
        parts = (self.topology_sockets, self.topology_cores, self.topology_threads)
        if any(p is not None for p in parts) and None in parts:
            raise self.error("topology needs sockets, cores and threads together")
        ids = [cell.id for cell in self.numa_cells]
        if ids != list(range(len(ids))):
            raise self.error(f"NUMA cell ids must be 0, 1, ... in order, not {ids}")


class Clock(XMLBuilder):
    """``<clock offset=...>``."""

    XML_NAME = "clock"

    offset: str | None = xml_property(
        "./@offset", required=True, choices=("utc", "localtime", "timezone", "variable")
    )


class Domain(XMLBuilder):
    """A whole ``<domain>``: identity, sizing, sections and ``devices`` in order.

    ``memory_kib`` sets both ``<memory>`` and ``<currentMemory>``; with NUMA
    cells it must equal their sum (libvirt recomputes it from the cells).
    ``vcpu_cpuset`` is the host CPUs unpinned vCPUs float on.
    """

    XML_NAME = "domain"

    # NOTE: "test" is for libvirt's in-process test:///default driver (unit tests).
    type: str | None = xml_property("./@type", required=True, choices=("qemu", "kvm", "test"))
    name: str | None = xml_property("./name", required=True, check=_check_name)
    uuid: str | None = xml_property("./uuid", check=check_uuid)
    title: str | None = xml_property("./title", check=_check_title)
    metadata: InstanceMetadata | None = xml_child(InstanceMetadata, "./metadata")
    memory_kib: int | None = _memory_kib()
    memory_backing: MemoryBacking | None = xml_child(MemoryBacking)
    vcpus: int | None = xml_property("./vcpu", int, required=True, minimum=1)
    vcpu_cpuset: str | None = xml_property("./vcpu/@cpuset", check=check_cpuset)
    cputune: CPUTune | None = xml_child(CPUTune)
    numatune: NUMATune | None = xml_child(NUMATune)
    os: OS | None = xml_child(OS, required=True)
    features: Features | None = xml_child(Features)
    cpu: CPU | None = xml_child(CPU)
    clock: Clock | None = xml_child(Clock)
    on_poweroff: str | None = xml_property("./on_poweroff", choices=_LIFECYCLE)
    on_reboot: str | None = xml_property("./on_reboot", choices=_LIFECYCLE)
    on_crash: str | None = xml_property(
        "./on_crash", choices=_LIFECYCLE + ("coredump-destroy", "coredump-restart")
    )
    devices: list[XMLBuilder] = xml_children(
        Disk,
        Controller,
        Interface,
        Serial,
        Console,
        Channel,
        MemBalloon,
        Rng,
        Watchdog,
        path="./devices",
    )

    def _validate(self) -> None:
        cells = self.cpu.numa_cells if self.cpu is not None else []
        if cells and self.memory_kib != sum(cell.memory_kib or 0 for cell in cells):
            raise self.error(
                f"memory_kib {self.memory_kib} is not the sum of the NUMA cells' memory"
            )
        pins = self.cputune.vcpupins if self.cputune is not None else []
        if self.vcpus is not None and any((pin.vcpu or 0) >= self.vcpus for pin in pins):
            raise self.error(f"a vcpupin names a vCPU beyond the {self.vcpus} vCPUs")

    def devices_of(self, cls: builtins.type[_D]) -> list[_D]:
        """The devices that are ``cls`` instances, in document order."""
        return [dev for dev in self.devices if isinstance(dev, cls)]
