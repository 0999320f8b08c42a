"""Our ``<metadata>`` element: what the agent needs to rebuild its view from libvirt.

libvirt's metadata API (``virDomainSetMetadata``/``virDomainGetMetadata`` with
``VIR_DOMAIN_METADATA_ELEMENT``) takes and returns the element *without* a
namespace and applies ``key``/``uri`` itself (passing a namespaced element
fails with "failed to create a new XML namespace"). So
:meth:`InstanceMetadata.to_string` writes that bare form and
:meth:`InstanceMetadata.parse` accepts it as well as the namespaced one.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from .base import (
    XMLBuilder,
    parse_xml,
    xml_child,
    xml_children,
    xml_property,
)
from .checks import check_mac, check_uuid

METADATA_NAMESPACE = "https://compute-driver.dev/xmlns/instance/1.0"
METADATA_PREFIX = "cd"
_NS = (METADATA_PREFIX, METADATA_NAMESPACE)


class FlavorRef(XMLBuilder):
    """The flavor the instance was built from, copied (flavors may change later)."""

    XML_NAME = "flavor"
    XML_NS = _NS

    name: str | None = xml_property("./@name", required=True)
    vcpus: int | None = xml_property("./vcpus", int, minimum=1)
    memory_mb: int | None = xml_property("./memory_mb", int, minimum=1)
    root_gb: int | None = xml_property("./root_gb", int, minimum=0)


class PortRef(XMLBuilder):
    """A port plugged for the instance, and the network plugin that plugged it."""

    XML_NAME = "port"
    XML_NS = _NS

    id: str | None = xml_property("./@id", required=True)
    network: str | None = xml_property("./@network")
    mac: str | None = xml_property("./@mac", check=check_mac)
    plugin: str | None = xml_property("./@plugin")


class VolumeRef(XMLBuilder):
    """A volume attached to the instance, and the storage backend that owns it.

    NOTE: ``target_dev`` is what the guest was told, for display: a disk is
    found by its alias and serial (``ua-vol-<id>``), never by this name,
    which a change of bus renames.
    """

    XML_NAME = "volume"
    XML_NS = _NS

    id: str | None = xml_property("./@id", required=True)
    backend: str | None = xml_property("./@backend")
    target_dev: str | None = xml_property("./@target_dev")


def _limit(name: str) -> Any:
    return xml_property(f"./@{name}", int, minimum=1)


class DiskPolicy(XMLBuilder):
    """The disk settings of the flavor and image, written on every disk of the guest.

    Kept so that a volume hot-attached later gets exactly what the disks
    defined with the domain got (bus, cache, io, iotune), without the flavor
    and image at hand.
    """

    XML_NAME = "disks"
    XML_NS = _NS

    bus: str | None = xml_property("./@bus", choices=("virtio", "scsi", "sata", "ide"))
    cache: str | None = xml_property(
        "./@cache", choices=("none", "writeback", "writethrough", "directsync", "unsafe")
    )
    io: str | None = xml_property("./@io", choices=("native", "threads", "io_uring"))
    discard: str | None = xml_property("./@discard", choices=("unmap", "ignore"))
    detect_zeroes: str | None = xml_property("./@detect_zeroes", choices=("off", "on", "unmap"))
    total_bytes_sec: int | None = _limit("total_bytes_sec")
    read_bytes_sec: int | None = _limit("read_bytes_sec")
    write_bytes_sec: int | None = _limit("write_bytes_sec")
    total_iops_sec: int | None = _limit("total_iops_sec")
    read_iops_sec: int | None = _limit("read_iops_sec")
    write_iops_sec: int | None = _limit("write_iops_sec")


class InstanceMetadata(XMLBuilder):
    """``<cd:instance>`` under the domain's ``<metadata>``."""

    XML_NAME = "instance"
    XML_NS = _NS

    uuid: str | None = xml_property("./uuid", required=True, check=check_uuid)
    name: str | None = xml_property("./name")
    project: str | None = xml_property("./project")
    user_data_size: int | None = xml_property("./user_data_size", int, minimum=0)
    flavor: FlavorRef | None = xml_child(FlavorRef)
    image_uuid: str | None = xml_property("./image/@uuid", check=check_uuid)
    #: The image asks for quiesced snapshots only (``os_require_quiesce``).
    require_quiesce: bool | None = xml_property("./image/@require_quiesce", bool)
    created_at: str | None = xml_property("./created_at")
    ports: list[PortRef] = xml_children(PortRef, path="./ports")
    volumes: list[VolumeRef] = xml_children(VolumeRef, path="./volumes")
    disks: DiskPolicy | None = xml_child(DiskPolicy)

    def to_string(self) -> str:
        """The element without namespace, as ``virDomainSetMetadata`` wants it.

        Call ``dom.setMetadata(VIR_DOMAIN_METADATA_ELEMENT, md.to_string(),
        METADATA_PREFIX, METADATA_NAMESPACE)``.
        """
        root = self.build()
        for el in root.iter():
            el.tag = etree.QName(el).localname
        etree.cleanup_namespaces(root)
        return str(etree.tostring(root, pretty_print=True, encoding="unicode"))

    @classmethod
    def parse(cls, text: str | bytes) -> InstanceMetadata:
        """Parse our element, namespaced or bare (``dom.metadata(...)`` output)."""
        root = parse_xml(text)
        if etree.QName(root).namespace is None:
            for el in root.iter(etree.Element):
                if etree.QName(el).namespace is None:
                    el.tag = f"{{{METADATA_NAMESPACE}}}{el.tag}"
        return cls.from_element(root)

    @classmethod
    def from_domain_xml(cls, text: str | bytes) -> InstanceMetadata | None:
        """Our metadata from a whole domain document, or None if it has none."""
        el = parse_xml(text).find(f"metadata/{cls.xml_tag()}")
        return None if el is None else cls.from_element(el)
