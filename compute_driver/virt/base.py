"""The virt driver interface (namespace ``compute_driver.virt``) and its value types.

A driver runs guests on one host. It does not prepare storage or wire
networks: the agent asks the storage backends and network plugins for the
disk and interface builders and hands them to :meth:`ComputeDriver.spawn`.
Optional abilities are listed by :meth:`ComputeDriver.describe`, never
signalled by methods that raise NotImplementedError.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# NOTE: the value types and states below moved to the neutral modules so that
# storage backends and the scheduler need not import the virt layer; they are
# re-exported here for the driver, the agent and their tests.
from compute_driver.objects import (
    FlavorSpec,
    ImageSpec,
    PortSpec,
    ServerSpec,
    VolumeSpec,
    decode_user_data,
)
from compute_driver.states import POWER_STATES, VM_STATE_OF_POWER

__all__ = [
    "POWER_STATES",
    "SNAPSHOT_KINDS",
    "VM_STATE_OF_POWER",
    "ComputeDriver",
    "FlavorSpec",
    "HostResources",
    "ImageSpec",
    "InstanceInfo",
    "InstanceSpec",
    "PortSpec",
    "SnapshotInfo",
    "VolumeRef",
    "VolumeSpec",
    "decode_user_data",
]


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a host needs to build one server: the scheduler's
    :class:`~compute_driver.objects.ServerSpec` with the user data decoded
    and the image's files found in this host's store."""

    uuid: str
    name: str
    project: str
    flavor: FlavorSpec
    image: ImageSpec
    created_at: str
    user_data: bytes = b""
    #: False: the root disk is a full copy of the image, not a linked clone.
    linked_root: bool = True
    #: The storage backend of the root disk; None: the host's ``root_backend``.
    root_backend: str | None = None
    #: A volume to boot from instead of a root disk made from the image.
    boot_volume: VolumeSpec | None = None
    #: Data volumes attached to the server (each with its target_dev).
    volumes: tuple[VolumeSpec, ...] = ()
    #: Its network ports, in device order; their addresses go on the config drive.
    ports: tuple[PortSpec, ...] = ()

    @classmethod
    def from_server(cls, server: ServerSpec, store_root: str) -> InstanceSpec:
        """``server`` on this host: its image's files are under ``store_root``
        (``[image] store_path``).

        :raises InvalidPayload: its user data is not valid base64.
        """
        return cls(
            uuid=server.uuid,
            name=server.name,
            project=server.project,
            flavor=server.flavor,
            image=ImageSpec.from_ref(server.image, store_root),
            created_at=server.created_at,
            user_data=decode_user_data(server.user_data),
            linked_root=(server.root_clone or "linked") == "linked",
            root_backend=server.root_backend,
            boot_volume=server.boot_volume,
            volumes=server.volumes,
            ports=server.ports,
        )

    @classmethod
    def from_payload(cls, payload: dict[str, Any], store_root: str) -> InstanceSpec:
        """From a ``schemas.INSTANCE`` payload (see :meth:`from_server`).

        :raises InvalidPayload: the payload does not match the schema.
        """
        return cls.from_server(ServerSpec.from_wire(payload), store_root)


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
        self,
        instance: InstanceSpec,
        disks: list[Any],
        interfaces: list[Any],
        volumes: list[VolumeRef],
    ) -> str:
        """Create and start the guest.

        :param instance: what to build.
        :param disks: disk builders from the storage backends, root disk first.
        :param interfaces: interface builders from the network plugins.
        :param volumes: what ``disks`` are, recorded in the guest's metadata.
        :returns: the guest's power state once started (one of ``POWER_STATES``).
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
    def redefine(
        self,
        instance: InstanceSpec,
        disks: list[Any],
        interfaces: list[Any],
        volumes: list[VolumeRef],
    ) -> None:
        """Write a stopped guest's definition afresh from ``instance``.

        :raises InstanceStateConflict: the guest is running.
        """

    @abc.abstractmethod
    def attach_volume(self, uuid: str, disk: Any, volume: VolumeRef) -> str:
        """Attach a volume's disk builder to the guest (live too if it runs).

        Idempotent: an attached volume keeps its device.

        :param volume: the volume; its ``target_dev`` may be empty (the
            driver picks the next free one).
        :returns: the target device the guest sees (``vdb``...).
        :raises InstanceNotFound: no such guest here.
        :raises VirtError: the hypervisor refused; nothing is attached.
        """

    @abc.abstractmethod
    def detach_volume(self, uuid: str, volume_id: str, timeout: float) -> None:
        """Detach a volume; a running guest must release it within ``timeout`` s.

        Idempotent: a volume that is not attached is not an error.

        :raises InstanceNotFound: no such guest here.
        :raises DeviceDetachFailed: the guest refused or did not answer; the
            volume stays attached.
        :raises VirtError: the hypervisor refused.
        """

    @abc.abstractmethod
    def extend_volume(self, uuid: str, volume_id: str, size_bytes: int) -> None:
        """Grow an attached volume so that the running guest sees the new size.

        :raises InstanceNotFound: no such guest here.
        :raises VolumeNotAttached: the volume is not attached to it.
        :raises VirtError: the hypervisor refused.
        """

    @abc.abstractmethod
    def attach_interface(
        self, uuid: str, interface: Any, port_id: str, network_id: str, mac: str
    ) -> None:
        """Attach a port's interface builder to the guest (live too if it runs). Idempotent.

        :raises InstanceNotFound: no such guest here.
        :raises VirtError: the hypervisor refused; nothing is attached.
        """

    @abc.abstractmethod
    def detach_interface(self, uuid: str, port_id: str, timeout: float) -> None:
        """Detach a port's NIC; a running guest must release it within ``timeout`` s.

        Idempotent: a port that is not attached is not an error.

        :raises InstanceNotFound: no such guest here.
        :raises DeviceDetachFailed: the guest refused or did not answer; the NIC stays.
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
    def get_diagnostics(self, uuid: str) -> dict[str, Any]:
        """Counters of one guest: CPU time, memory, vCPUs, disk and NIC I/O.

        :raises InstanceNotFound: no such guest here.
        """

    @abc.abstractmethod
    def console_output(self, uuid: str, lines: int) -> str:
        """The last ``lines`` lines of the guest's serial console ('' when the
        driver keeps no console log; see ``describe()['console_log']``).

        :raises InstanceNotFound: no such guest here.
        """

    @abc.abstractmethod
    def power_states(self) -> dict[str, str]:
        """The power state of every guest of ours, in as few hypervisor calls as possible.

        A guest missing from the answer is unknown this time (it vanished,
        or the hypervisor could not answer for it at once), not deleted.

        :returns: instance UUID -> one of :data:`POWER_STATES`.
        :raises HypervisorUnavailable: the hypervisor cannot be reached.
        :raises VirtError: the hypervisor refused.
        """

    @abc.abstractmethod
    def register_event_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(event)`` for each event of a guest of ours, once started.

        Events are the driver's typed events (for libvirt: ``LifecycleEvent``
        with ``uuid`` and ``power_state``, ``DeviceRemovedEvent`` and
        ``DeviceRemovalFailedEvent`` with ``uuid`` and ``alias``). Callbacks
        run one at a time on a thread of the driver, in arrival order, except
        that a stop is held back briefly and dropped if the guest starts again.

        :param callback: must not block for long; exceptions are logged.
        """

    @abc.abstractmethod
    def register_host_state_callback(self, callback: Callable[[bool, str], None]) -> None:
        """Call ``callback(available, reason)`` when the hypervisor goes away or comes back.

        The driver reconnects by itself; after ``True`` the caller should
        resynchronise (events were lost while it was away).
        """

    @abc.abstractmethod
    def start_events(self) -> None:
        """Start delivering events to the registered callbacks (again after reconnects).

        :raises HypervisorUnavailable: the hypervisor cannot be reached now;
            events start once it is back.
        """

    @abc.abstractmethod
    def stop_events(self) -> None:
        """Stop delivering events; held-back events are dropped."""

    @abc.abstractmethod
    def snapshot_create(
        self, uuid: str, name: str, kind: str, quiesce: bool = False, description: str = ""
    ) -> SnapshotInfo:
        """Snapshot the guest's disks (and its memory, for an internal snapshot
        of a running guest). All disks are taken at the same instant or none is.

        :param name: unique per server; letters, digits, '-', '_', '.', at most
            64 characters, starting with a letter or digit.
        :param kind: ``internal`` (inside the qcow2 files) or ``external``
            (a new qcow2 overlay per disk; disks only).
        :param quiesce: require a quiesced snapshot (external, of a running
            guest whose agent answers); without it, an external snapshot of a
            running guest is quiesced whenever its agent is connected.
        :raises InstanceNotFound: no such guest here.
        :raises InvalidSnapshot: bad name, kind or combination of options.
        :raises SnapshotExists: the server has a snapshot of that name.
        :raises SnapshotLimitReached: ``[snapshots] max_snapshots_per_instance``.
        :raises SnapshotConflict: the server cannot take this snapshot now
            (suspended, no guest agent, other kind of snapshots, disks that
            are not local qcow2 files).
        :raises VirtError: the hypervisor refused; no part of the snapshot is left.
        """

    @abc.abstractmethod
    def snapshot_list(self, uuid: str) -> list[SnapshotInfo]:
        """The guest's snapshots, oldest first, with their tree relations.

        :raises InstanceNotFound: no such guest here.
        """

    @abc.abstractmethod
    def snapshot_revert(self, uuid: str, name: str) -> None:
        """Bring the guest's disks (and memory, when saved) back to a snapshot.

        The guest ends in the snapshot's state: running for a snapshot of a
        running guest with memory, stopped otherwise. Data written after the
        snapshot is lost.

        :raises InstanceNotFound: no such guest here.
        :raises SnapshotNotFound: no such snapshot.
        :raises SnapshotConflict: the revert is not possible in this state
            (e.g. an external snapshot of a running guest).
        :raises VirtError: the hypervisor refused.
        """

    @abc.abstractmethod
    def snapshot_delete(self, uuid: str, name: str) -> None:
        """Delete a snapshot, keeping the guest's current data.

        :raises InstanceNotFound: no such guest here.
        :raises SnapshotNotFound: no such snapshot.
        :raises SnapshotConflict: it cannot be deleted now (e.g. an external
            snapshot that has children).
        :raises VirtError: the hypervisor refused.
        """


SNAPSHOT_KINDS = ("internal", "external")


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot of a server, as the hypervisor keeps it.

    ``state`` is the server's state the snapshot captured (libvirt's words):
    ``running`` or ``paused`` with memory, ``shutoff`` for disks of a stopped
    server, ``disk-snapshot`` for the disks only of a running one.
    ``created_at`` is ISO 8601 UTC.
    """

    name: str
    kind: str
    created_at: str
    parent: str | None
    children: tuple[str, ...]
    state: str
    description: str = ""
    #: The guest agent froze the file systems for it; never for internal
    #: snapshots or stopped servers.
    quiesced: bool = False
