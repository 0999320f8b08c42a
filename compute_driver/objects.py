"""Value objects that cross the bus: flavor, image, volume, network, port,
server and host report, and the image and user data a host derives from them.

Each is a frozen dataclass with ``to_wire()`` (the JSON-able dict the RPC
payload carries) and ``from_wire()`` (that dict checked against its schema
in :mod:`compute_driver.wire_schemas`, then typed). One definition each: the
scheduler builds them from its rows (``scheduler/records.py``), the compute
API sends their wire form, the agent and the virt driver read them typed.

A neutral module: it imports only the other neutral modules (exceptions,
the schemas and the disk-image helpers), so storage backends, the
scheduler and the virt driver can all use it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compute_driver import disk_image, exception
from compute_driver import wire_schemas as schemas


def decode_user_data(encoded: str | None) -> bytes:
    """The bytes of base64 ``encoded`` user data (b"" for none).

    :raises InvalidPayload: not valid base64 (the schema only checks the alphabet).
    """
    try:
        return base64.b64decode(encoded or "", validate=True)
    except (binascii.Error, ValueError):
        raise exception.InvalidPayload(
            method="user_data", reason="not valid base64 (bad length or padding)"
        ) from None


def _checked(kind: str, schema: dict[str, Any], wire: Mapping[str, Any]) -> dict[str, Any]:
    """``wire`` as a dict, checked against ``schema``.

    :raises InvalidPayload: naming ``kind`` and the first offending field.
    """
    if not isinstance(wire, Mapping):
        raise exception.InvalidPayload(method="wire." + kind, reason="(payload): not an object")
    payload = dict(wire)
    schemas.validate("wire", kind, schema, payload)
    return payload


def _present(**fields: Any) -> dict[str, Any]:
    """The fields that are not None (the wire leaves an unset optional field out)."""
    return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True)
class FlavorSpec:
    """The size of a server (``schemas.FLAVOR``), as copied into the instance
    at create time: one object from the catalog row to the guest's settings."""

    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    extra_specs: Mapping[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The ``schemas.FLAVOR`` dict (``extra_specs`` always present)."""
        return {
            "name": self.name,
            "vcpus": self.vcpus,
            "memory_mb": self.memory_mb,
            "root_gb": self.root_gb,
            "extra_specs": dict(self.extra_specs),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> FlavorSpec:
        """:raises InvalidPayload: ``wire`` does not match ``schemas.FLAVOR``."""
        flavor = _checked("flavor", schemas.FLAVOR, wire)
        return cls(
            name=flavor["name"],
            vcpus=flavor["vcpus"],
            memory_mb=flavor["memory_mb"],
            root_gb=flavor["root_gb"],
            extra_specs=dict(flavor.get("extra_specs") or {}),
        )


@dataclass(frozen=True)
class ImageRef:
    """An image as the scheduler names it to an agent (``schemas.IMAGE``).

    NOTE: no paths: the agent finds the disk (and, with ``kernel``, the
    kernel and initrd) in its own image store under the UUID
    (:meth:`ImageSpec.from_ref`), so no message names a file.
    """

    uuid: str
    name: str
    disk_format: str
    virtual_size: int = 0
    kernel: bool = False
    cmdline: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The ``schemas.IMAGE`` dict (every field present, ``cmdline`` maybe null)."""
        return {
            "uuid": self.uuid,
            "name": self.name,
            "disk_format": self.disk_format,
            "virtual_size": self.virtual_size,
            "kernel": self.kernel,
            "cmdline": self.cmdline,
            "properties": dict(self.properties),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ImageRef:
        """:raises InvalidPayload: ``wire`` does not match ``schemas.IMAGE``."""
        image = _checked("image", schemas.IMAGE, wire)
        return cls(
            uuid=image["uuid"],
            name=image["name"],
            disk_format=image["disk_format"],
            virtual_size=image.get("virtual_size", 0),
            kernel=bool(image.get("kernel")),
            cmdline=image.get("cmdline"),
            properties=dict(image.get("properties") or {}),
        )


@dataclass(frozen=True)
class ImageSpec:
    """An image in this host's image store; ``kernel_path`` set means direct kernel boot."""

    uuid: str
    name: str
    disk_format: str
    path: str
    virtual_size: int = 0
    kernel_path: str | None = None
    initrd_path: str | None = None
    cmdline: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_ref(cls, image: ImageRef, store_root: str) -> ImageSpec:
        """``image`` in the store at ``store_root`` (``[image] store_path``), its
        files derived from the UUID.

        NOTE: a message never names a file: a forged one can at most name
        another stored image.
        """
        uuid = image.uuid
        return cls(
            uuid=uuid,
            name=image.name,
            disk_format=image.disk_format,
            path=disk_image.stored_disk(store_root, uuid, image.disk_format),
            virtual_size=image.virtual_size,
            kernel_path=disk_image.stored_file(store_root, uuid, "kernel")
            if image.kernel
            else None,
            initrd_path=disk_image.stored_file(store_root, uuid, "initrd")
            if image.kernel
            else None,
            cmdline=image.cmdline,
            properties=dict(image.properties),
        )

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any], store_root: str) -> ImageSpec:
        """From a ``schemas.IMAGE`` dict (see :meth:`from_ref`).

        :raises InvalidPayload: ``wire`` does not match the schema.
        """
        return cls.from_ref(ImageRef.from_wire(wire), store_root)


@dataclass(frozen=True)
class VolumeSpec:
    """A volume as the scheduler hands it to an agent (``schemas.VOLUME``):
    what its backend said of it, and where it is attached."""

    id: str
    backend: str
    size_gb: int | None = None
    format: str | None = None
    location: str | None = None
    target_dev: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The ``schemas.VOLUME`` dict; unset fields are left out."""
        return _present(
            id=self.id,
            backend=self.backend,
            size_gb=self.size_gb,
            location=self.location,
            format=self.format,
            target_dev=self.target_dev,
        )

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> VolumeSpec:
        """:raises InvalidPayload: ``wire`` does not match ``schemas.VOLUME``."""
        volume = _checked("volume", schemas.VOLUME, wire)
        return cls(
            id=volume["id"],
            backend=volume["backend"],
            size_gb=volume.get("size_gb"),
            format=volume.get("format"),
            location=volume.get("location"),
            target_dev=volume.get("target_dev"),
        )


@dataclass(frozen=True)
class NetworkSpec:
    """A tenant network as the scheduler hands it to an agent (``schemas.NETWORK``)."""

    id: str
    name: str
    type: str
    mtu: int
    segment: int | None = None
    physnet: str | None = None
    revision: int = 0

    def to_wire(self) -> dict[str, Any]:
        """The ``schemas.NETWORK`` dict (every field present, segment and physnet maybe null)."""
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "segment": self.segment,
            "physnet": self.physnet,
            "mtu": self.mtu,
            "revision": self.revision,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> NetworkSpec:
        """:raises InvalidPayload: ``wire`` does not match ``schemas.NETWORK``."""
        network = _checked("network", schemas.NETWORK, wire)
        return cls._typed(network)

    @classmethod
    def _typed(cls, network: dict[str, Any]) -> NetworkSpec:
        return cls(
            id=network["id"],
            name=network["name"],
            type=network["type"],
            mtu=network["mtu"],
            segment=network.get("segment"),
            physnet=network.get("physnet"),
            revision=network.get("revision", 0),
        )


@dataclass(frozen=True)
class PortSpec:
    """A server's port as the scheduler hands it to an agent (``schemas.PORT``)."""

    id: str
    network: NetworkSpec
    mac: str
    address: str
    gateway: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The ``schemas.PORT`` dict (``gateway`` maybe null)."""
        return {
            "id": self.id,
            "network": self.network.to_wire(),
            "mac": self.mac,
            "address": self.address,
            "gateway": self.gateway,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> PortSpec:
        """:raises InvalidPayload: ``wire`` does not match ``schemas.PORT``."""
        return cls._typed(_checked("port", schemas.PORT, wire))

    @classmethod
    def _typed(cls, port: dict[str, Any]) -> PortSpec:
        return cls(
            id=port["id"],
            network=NetworkSpec._typed(port["network"]),
            mac=port["mac"],
            address=port["address"],
            gateway=port.get("gateway"),
        )


@dataclass(frozen=True)
class ServerSpec:
    """A server as the scheduler hands it to an agent to build (``schemas.INSTANCE``).

    The agent's own view, with the user data decoded and the image's files
    found, is ``virt.base.InstanceSpec``.
    """

    uuid: str
    name: str
    project: str
    flavor: FlavorSpec
    image: ImageRef
    created_at: str
    #: base64, as stored and sent; None: no user data.
    user_data: str | None = None
    #: "linked" or "full" (None: not said, which means linked).
    root_clone: str | None = None
    root_backend: str | None = None
    boot_volume: VolumeSpec | None = None
    volumes: tuple[VolumeSpec, ...] = ()
    ports: tuple[PortSpec, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        """The ``schemas.INSTANCE`` dict; unset and empty optional fields are left out."""
        wire: dict[str, Any] = {
            "uuid": self.uuid,
            "name": self.name,
            "project": self.project,
            "flavor": self.flavor.to_wire(),
            "image": self.image.to_wire(),
            "created_at": self.created_at,
        }
        wire.update(
            _present(
                user_data=self.user_data or None,
                root_clone=self.root_clone,
                root_backend=self.root_backend or None,
                boot_volume=self.boot_volume.to_wire() if self.boot_volume else None,
                volumes=[v.to_wire() for v in self.volumes] or None,
                ports=[p.to_wire() for p in self.ports] or None,
            )
        )
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ServerSpec:
        """:raises InvalidPayload: ``wire`` does not match ``schemas.INSTANCE``."""
        server = _checked("instance", schemas.INSTANCE, wire)
        boot = server.get("boot_volume")
        # NOTE: the parts are checked with the whole; they are typed without
        # validating each again.
        return cls(
            uuid=server["uuid"],
            name=server["name"],
            project=server["project"],
            flavor=FlavorSpec(
                **{**server["flavor"], "extra_specs": dict(server["flavor"].get("extra_specs", {}))}
            ),
            image=ImageRef(
                **{
                    **server["image"],
                    "kernel": bool(server["image"].get("kernel")),
                    "properties": dict(server["image"].get("properties") or {}),
                }
            ),
            created_at=server["created_at"],
            user_data=server.get("user_data"),
            root_clone=server.get("root_clone"),
            root_backend=server.get("root_backend"),
            boot_volume=VolumeSpec(**boot) if boot is not None else None,
            volumes=tuple(VolumeSpec(**v) for v in server.get("volumes") or ()),
            ports=tuple(PortSpec._typed(p) for p in server.get("ports") or ()),
        )


@dataclass(frozen=True)
class HostCapacity:
    """What a host offers (``schemas.HOST_RESOURCES``)."""

    vcpus: int
    memory_mb: int
    disk_gb: int

    def to_wire(self) -> dict[str, Any]:
        """The ``schemas.HOST_RESOURCES`` dict."""
        return {"vcpus": self.vcpus, "memory_mb": self.memory_mb, "disk_gb": self.disk_gb}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> HostCapacity:
        """:raises InvalidPayload: ``wire`` does not match ``schemas.HOST_RESOURCES``."""
        resources = _checked("host_resources", schemas.HOST_RESOURCES, wire)
        return cls(**resources)


@dataclass(frozen=True)
class HostCapabilities:
    """What a host can do (``schemas.HOST_CAPABILITIES``); None: not reported."""

    virt_type: str | None = None
    arch: str | None = None
    hypervisor: str | None = None
    hypervisor_version: str | None = None
    network_plugins: tuple[str, ...] | None = None
    storage_backends: tuple[str, ...] | None = None
    shared_storage_backends: tuple[str, ...] | None = None
    tunnel_ip: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The ``schemas.HOST_CAPABILITIES`` dict; unreported fields are left out."""

        def names(values: tuple[str, ...] | None) -> list[str] | None:
            return None if values is None else list(values)

        return _present(
            virt_type=self.virt_type,
            arch=self.arch,
            hypervisor=self.hypervisor,
            hypervisor_version=self.hypervisor_version,
            network_plugins=names(self.network_plugins),
            storage_backends=names(self.storage_backends),
            shared_storage_backends=names(self.shared_storage_backends),
            tunnel_ip=self.tunnel_ip,
        )

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> HostCapabilities:
        """:raises InvalidPayload: ``wire`` does not match ``schemas.HOST_CAPABILITIES``."""
        return cls._typed(_checked("host_capabilities", schemas.HOST_CAPABILITIES, wire))

    @classmethod
    def _typed(cls, caps: dict[str, Any]) -> HostCapabilities:
        def names(key: str) -> tuple[str, ...] | None:
            return tuple(caps[key]) if key in caps else None

        return cls(
            virt_type=caps.get("virt_type"),
            arch=caps.get("arch"),
            hypervisor=caps.get("hypervisor"),
            hypervisor_version=caps.get("hypervisor_version"),
            network_plugins=names("network_plugins"),
            storage_backends=names("storage_backends"),
            shared_storage_backends=names("shared_storage_backends"),
            tunnel_ip=caps.get("tunnel_ip"),
        )


@dataclass(frozen=True)
class InstancePower:
    """One instance's power state on a host (``schemas.INSTANCE_POWER``)."""

    uuid: str
    power_state: str

    def to_wire(self) -> dict[str, Any]:
        """The ``schemas.INSTANCE_POWER`` dict."""
        return {"uuid": self.uuid, "power_state": self.power_state}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> InstancePower:
        """:raises InvalidPayload: ``wire`` does not match ``schemas.INSTANCE_POWER``."""
        return cls(**_checked("instance_power", schemas.INSTANCE_POWER, wire))


@dataclass(frozen=True)
class HostReport:
    """A host as its agent reports it (``report_host``): capacity, abilities,
    and the power state of every instance on it."""

    host: str
    resources: HostCapacity
    capabilities: HostCapabilities
    instances: tuple[InstancePower, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        """The ``report_host`` payload (unsigned)."""
        return {
            "host": self.host,
            "resources": self.resources.to_wire(),
            "capabilities": self.capabilities.to_wire(),
            "instances": [i.to_wire() for i in self.instances],
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> HostReport:
        """:raises InvalidPayload: ``wire`` does not match the ``report_host`` schema."""
        report = _checked("host_report", schemas.HOST_REPORT, wire)
        return cls(
            host=report["host"],
            resources=HostCapacity(**report["resources"]),
            capabilities=HostCapabilities._typed(report["capabilities"]),
            instances=tuple(InstancePower(**i) for i in report["instances"]),
        )
