"""Typed builders for libvirt domain XML (parse and serialize through one declaration).

Usage::

    from compute_driver import domain_xml as lvxml
    dom = lvxml.Domain(type="qemu", name="cd-1", memory_kib=262144, vcpus=1,
                       os=lvxml.OS(type="hvm"))
    dom.devices.append(lvxml.Disk(type="file", source_file="/x.qcow2", target_dev="vda"))
    text = dom.to_string()
    assert lvxml.Domain.parse(text) == dom
"""

from .base import XMLBuilder, XMLBuilderError
from .chardev import Channel, CharDevice, Console, Serial
from .devices import Controller, MemBalloon, Rng, Watchdog
from .disk import Disk, DiskHost
from .domain import CPU, OS, Clock, Domain, Features
from .interface import Interface
from .metadata import (
    METADATA_NAMESPACE,
    METADATA_PREFIX,
    DiskPolicy,
    FlavorRef,
    InstanceMetadata,
    PortRef,
    VolumeRef,
)
from .numa import CPUTune, MemoryBacking, NUMACell, NUMAMemNode, NUMATune, VCPUPin

__all__ = [
    "CPU",
    "CPUTune",
    "Channel",
    "CharDevice",
    "Clock",
    "Console",
    "Controller",
    "Disk",
    "DiskHost",
    "DiskPolicy",
    "Domain",
    "Features",
    "FlavorRef",
    "InstanceMetadata",
    "Interface",
    "METADATA_NAMESPACE",
    "METADATA_PREFIX",
    "MemBalloon",
    "MemoryBacking",
    "NUMACell",
    "NUMAMemNode",
    "NUMATune",
    "OS",
    "PortRef",
    "Rng",
    "Serial",
    "VCPUPin",
    "VolumeRef",
    "Watchdog",
    "XMLBuilder",
    "XMLBuilderError",
]
