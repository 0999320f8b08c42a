"""The virt driver interface (namespace ``compute_driver.virt``) and its value types.

A driver runs guests on one host. It does not prepare storage or wire
networks: the agent asks the storage backends and network plugins for the
disk and interface builders and hands them to :meth:`ComputeDriver.spawn`.
Optional abilities are listed by :meth:`ComputeDriver.describe`, never
signalled by methods that raise NotImplementedError.
"""

from __future__ import annotations

import abc
import base64
from dataclasses import dataclass, field
from typing import Any

POWER_STATES = ("running", "paused", "shutdown", "crashed", "suspended", "nostate")


@dataclass(frozen=True)
class FlavorSpec:
    """The size of a server, as copied into the instance at create time."""

    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    extra_specs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageSpec:
    """An image in the image store; ``kernel_path`` set means direct kernel boot."""

    uuid: str
    name: str
    disk_format: str
    path: str
    virtual_size: int = 0
    kernel_path: str | None = None
    initrd_path: str | None = None
    cmdline: str | None = None
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a host needs to build one server (from the build_instance payload)."""

    uuid: str
    name: str
    project: str
    flavor: FlavorSpec
    image: ImageSpec
    created_at: str
    user_data: bytes = b""

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> InstanceSpec:
        """Build from a payload already checked against ``schemas.INSTANCE``."""
        return cls(
            uuid=payload["uuid"],
            name=payload["name"],
            project=payload["project"],
            flavor=FlavorSpec(**payload["flavor"]),
            image=ImageSpec(**payload["image"]),
            created_at=payload["created_at"],
            user_data=base64.b64decode(payload.get("user_data") or ""),
        )


@dataclass(frozen=True)
class VolumeRef:
    """A disk of an instance as recorded in the hypervisor's own metadata."""

    id: str
    backend: str
    target_dev: str


@dataclass(frozen=True)
class InstanceInfo:
    """What the hypervisor says about one of our instances."""

    uuid: str
    name: str
    power_state: str
    vcpus: int
    memory_mb: int
    volumes: tuple[VolumeRef, ...] = field(default=())


@dataclass(frozen=True)
class HostResources:
    """Capacity of the host as the hypervisor sees it (disk comes from storage)."""

    vcpus: int
    memory_mb: int
    arch: str
    virt_type: str
    hypervisor: str
    hypervisor_version: str


class ComputeDriver(abc.ABC):
    """Runs guests on one host.

    Every method that names an instance takes its UUID; lookups of unknown
    UUIDs raise :class:`~compute_driver.exception.InstanceNotFound`, except
    :meth:`destroy`, which is idempotent.
    """

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """The driver's name and optional abilities, e.g. ``{"console_log": True}``."""

    @abc.abstractmethod
    def init_host(self, host: str) -> None:
        """Connect to the hypervisor and check it is usable.

        :param host: this host's name.
        :raises HypervisorUnavailable: the hypervisor cannot be reached or used.
        """

    @abc.abstractmethod
    def spawn(
        self, instance: InstanceSpec, disks: list, interfaces: list, volumes: list[VolumeRef]
    ) -> None:
        """Create and start the guest.

        :param instance: what to build.
        :param disks: disk builders from the storage backends, root disk first.
        :param interfaces: interface builders from the network plugins.
        :param volumes: what ``disks`` are, recorded in the guest's metadata.
        :raises VirtError: the guest could not be defined or started; nothing
            of it is left behind.
        """

    @abc.abstractmethod
    def destroy(self, uuid: str) -> InstanceInfo | None:
        """Stop and remove the guest and its driver-side files. Idempotent.

        :returns: what the guest was (so the caller can free its volumes),
            or None when it did not exist.
        :raises VirtError: the hypervisor refused; the guest may remain.
        """

    @abc.abstractmethod
    def list_instances(self) -> list[InstanceInfo]:
        """Every guest on this host that carries our metadata."""

    @abc.abstractmethod
    def get_info(self, uuid: str) -> InstanceInfo:
        """Power state and size of one guest.

        :raises InstanceNotFound: no such guest here.
        """

    @abc.abstractmethod
    def get_host_resources(self) -> HostResources:
        """The host's CPUs, memory and hypervisor identity."""

    @abc.abstractmethod
    def power_off(self, uuid: str, timeout: float, retry_interval: float) -> bool:
        """Stop the guest: ask it to shut down (ACPI), then force after ``timeout`` s.

        Idempotent: a stopped guest stays stopped.

        :param retry_interval: seconds between repeated shutdown requests.
        :returns: True when the guest shut down by itself, False when forced.
        :raises InstanceNotFound: no such guest here.
        :raises VirtError: the hypervisor refused.
        """

    @abc.abstractmethod
    def power_on(self, uuid: str) -> None:
        """Start a stopped guest (restoring a suspended one). Idempotent.

        :raises InstanceNotFound: no such guest here.
        :raises VirtError: the hypervisor refused.
        """

    @abc.abstractmethod
    def reboot(self, uuid: str, hard: bool, timeout: float) -> bool:
        """Restart the guest.

        Soft: shut down through ACPI and start again, falling back to hard
        when the guest has not stopped within ``timeout`` s. Hard: stop at
        once and start again.

        :returns: True when the soft path succeeded (False when hard was used).
        :raises InstanceNotFound: no such guest here.
        :raises VirtError: the hypervisor refused.
        """

    @abc.abstractmethod
    def pause(self, uuid: str) -> None:
        """Freeze the guest's vCPUs (memory stays in RAM). Idempotent."""

    @abc.abstractmethod
    def unpause(self, uuid: str) -> None:
        """Let a paused guest run again. Idempotent."""

    @abc.abstractmethod
    def suspend(self, uuid: str) -> None:
        """Save the guest's memory to disk and stop it (managed save). Idempotent."""

    @abc.abstractmethod
    def console_output(self, uuid: str, lines: int) -> str:
        """The last ``lines`` lines of the guest's serial console ('' when the
        driver keeps no console log; see ``describe()['console_log']``).

        :raises InstanceNotFound: no such guest here.
        """
