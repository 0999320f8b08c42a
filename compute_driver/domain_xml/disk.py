"""``<disk>``: file, block and network (rbd, nfs, iscsi, nbd) disks."""

from __future__ import annotations

from typing import Any

from .base import XMLBuilder, xml_children, xml_property
from .checks import check_uuid


def _iotune(name: str) -> Any:
    return xml_property(f"./iotune/{name}", int, minimum=0)


class DiskHost(XMLBuilder):
    """``<host name= port=>`` inside a network disk's ``<source>``."""

    XML_NAME = "host"

    name: str | None = xml_property("./@name", required=True)
    port: int | None = xml_property("./@port", int, minimum=1, maximum=65535)


class Disk(XMLBuilder):
    """A guest disk or cdrom.

    The source fields must match ``type``: ``source_file`` for ``file``,
    ``source_dev`` for ``block``, ``source_protocol``/``source_name``/``hosts``
    for ``network``. ``source_identity_*`` is for nfs, ``source_initiator_iqn``
    for iscsi. ``auth_*`` is the ``<auth><secret>`` of rbd and iscsi.
    The ``*_bytes_sec``/``*_iops_sec`` limits are its ``<iotune>``: a total
    limit excludes the read and write limits of the same kind.
    """

    XML_NAME = "disk"

    type: str | None = xml_property("./@type", required=True, choices=("file", "block", "network"))
    device: str | None = xml_property("./@device", choices=("disk", "cdrom", "floppy", "lun"))
    driver_name: str | None = xml_property("./driver/@name")
    driver_type: str | None = xml_property("./driver/@type")
    cache: str | None = xml_property(
        "./driver/@cache",
        choices=("default", "none", "writethrough", "writeback", "directsync", "unsafe"),
    )
    io: str | None = xml_property("./driver/@io", choices=("threads", "native", "io_uring"))
    discard: str | None = xml_property("./driver/@discard", choices=("unmap", "ignore"))
    detect_zeroes: str | None = xml_property(
        "./driver/@detect_zeroes", choices=("off", "on", "unmap")
    )
    source_file: str | None = xml_property("./source/@file")
    source_dev: str | None = xml_property("./source/@dev")
    source_protocol: str | None = xml_property(
        "./source/@protocol", choices=("rbd", "nfs", "iscsi", "nbd")
    )
    source_name: str | None = xml_property("./source/@name")
    hosts: list[DiskHost] = xml_children(DiskHost, path="./source")
    source_identity_user: str | None = xml_property("./source/identity/@user")
    source_identity_group: str | None = xml_property("./source/identity/@group")
    source_initiator_iqn: str | None = xml_property("./source/initiator/iqn/@name")
    auth_username: str | None = xml_property("./auth/@username")
    auth_secret_type: str | None = xml_property("./auth/secret/@type", choices=("ceph", "iscsi"))
    auth_secret_uuid: str | None = xml_property("./auth/secret/@uuid", check=check_uuid)
    auth_secret_usage: str | None = xml_property("./auth/secret/@usage")
    target_dev: str | None = xml_property("./target/@dev", required=True)
    target_bus: str | None = xml_property(
        "./target/@bus", choices=("virtio", "ide", "scsi", "sata", "usb", "fdc")
    )
    readonly: bool = xml_property("./readonly", bool)
    shareable: bool = xml_property("./shareable", bool)
    serial: str | None = xml_property("./serial")
    #: How DEVICE_REMOVED events name the disk. We set user aliases (``ua-``
    #: prefix, the only ones libvirt accepts on input); a live domain shows
    #: libvirt's own (``virtio-disk0``).
    alias: str | None = xml_property("./alias/@name")
    total_bytes_sec: int | None = _iotune("total_bytes_sec")
    read_bytes_sec: int | None = _iotune("read_bytes_sec")
    write_bytes_sec: int | None = _iotune("write_bytes_sec")
    total_iops_sec: int | None = _iotune("total_iops_sec")
    read_iops_sec: int | None = _iotune("read_iops_sec")
    write_iops_sec: int | None = _iotune("write_iops_sec")

    def _validate(self) -> None:
        # NOTE: QEMU refuses aio=native unless the cache mode opens with O_DIRECT.
        if self.io == "native" and self.cache not in ("none", "directsync"):
            raise self.error(f"io 'native' needs cache 'none' or 'directsync', not {self.cache!r}")
        for kind in ("bytes", "iops"):
            total, read, write = (
                getattr(self, f"{part}_{kind}_sec") for part in ("total", "read", "write")
            )
            if total is not None and (read is not None or write is not None):
                raise self.error(f"total_{kind}_sec excludes read_{kind}_sec and write_{kind}_sec")
        network = (
            self.source_protocol,
            self.source_name,
            self.hosts,
            self.source_identity_user,
            self.source_identity_group,
            self.source_initiator_iqn,
        )
        if self.type != "file" and self.source_file is not None:
            raise self.error(f"source_file needs type 'file', not {self.type!r}")
        if self.type != "block" and self.source_dev is not None:
            raise self.error(f"source_dev needs type 'block', not {self.type!r}")
        if self.type != "network" and any(network):
            raise self.error(
                f"source_protocol, source_name, hosts and the identity/initiator "
                f"fields need type 'network', not {self.type!r}"
            )
        if self.type == "network" and self.source_protocol is None:
            raise self.error("a network disk needs source_protocol")
        auth = (
            self.auth_username,
            self.auth_secret_type,
            self.auth_secret_uuid,
            self.auth_secret_usage,
        )
        if any(v is not None for v in auth):
            if self.auth_username is None or self.auth_secret_type is None:
                raise self.error("auth needs auth_username and auth_secret_type")
            if (self.auth_secret_uuid is None) == (self.auth_secret_usage is None):
                raise self.error("auth needs exactly one of auth_secret_uuid and auth_secret_usage")
