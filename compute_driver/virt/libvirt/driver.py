"""The libvirt virt driver (entry point ``libvirt`` in ``compute_driver.virt``).

On a host, libvirt is the truth: every domain we define carries our
``<metadata>`` (instance, flavor, image, volumes), so the agent can rebuild
its whole view from ``listAllDomains()`` after a restart.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import libvirt
from oslo_config import cfg

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.virt import base
from compute_driver.virt.libvirt import (
    configdrive,
    domain_builder,
    events,
    host_facts,
    ports,
    snapshots,
)
from compute_driver.virt.libvirt.domain_builder import domain_name
from compute_driver.virt.libvirt.host import LibvirtHost, choose_virt_type
from compute_driver.virt.libvirt.interfaces import InterfaceAttacher
from compute_driver.virt.libvirt.volumes import VolumeAttacher

LOG = logging.getLogger(__name__)

# NOTE: libvirt-python prints every error to stderr unless a handler is set;
# we report errors ourselves, with context.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutdown",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}

#: Seconds between two looks at a guest that is shutting down.
POLL_INTERVAL = 0.25
# NOTE: no VIR_DOMAIN_UNDEFINE_NVRAM: we boot no UEFI guests, and the test
# driver refuses the flag.
UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
)


class LibvirtDriver(base.ComputeDriver):
    """Guests as libvirt domains over one connection URI."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        self.opts = conf.libvirt
        self.host = LibvirtHost(self.opts.uri)
        self.virt_type = "qemu"
        self.host_facts: host_facts.HostFacts | None = None
        # NOTE: held only while a dedicated-CPU guest chooses its CPUs and is
        # defined, so that two such builds never pick the same CPUs.
        self._pinning_lock = threading.Lock()
        self._hypervisor: tuple[str, str] = ("", "")

    def describe(self) -> dict[str, Any]:
        return {
            "name": "libvirt",
            "uri": self.opts.uri,
            "virt_type": self.virt_type,
            # The test driver runs no guest, so it has no console to log.
            "console_log": self.virt_type != "test",
            "snapshots": ["internal", "external"],
        }

    def init_host(self, host: str) -> None:
        self.virt_type = choose_virt_type(
            self.opts.uri, self.opts.virt_type, self.opts.kvm_probe_timeout
        )
        conn = self.host.get_connection()
        # NOTE: asked once: getVersion() can take seconds on qemu:///system.
        self._hypervisor = (conn.getType(), _version_string(conn.getVersion()))
        LOG.info(
            "Connected to %s (libvirt %s, %s %s), guests are type=%s",
            self.opts.uri,
            _version_string(conn.getLibVersion()),
            *self._hypervisor,
            self.virt_type,
        )
        try:
            dedicated = host_facts.parse_cpuset(self.opts.cpu_dedicated_set)
        except ValueError as exc:
            raise exception.InvalidConfig(
                reason="[libvirt] cpu_dedicated_set = %r is invalid: %s"
                % (self.opts.cpu_dedicated_set, exc)
            ) from exc
        self.host_facts = host_facts.HostFacts.from_capabilities(
            conn.getCapabilities(), virt_type=self.virt_type, dedicated_cpus=dedicated
        )
        # NOTE: 0711: QEMU (another user) traverses to the files libvirt labels for it.
        os.makedirs(self.opts.instances_path, mode=0o711, exist_ok=True)

    # --- paths ---------------------------------------------------------------

    def instance_dir(self, uuid: str) -> str:
        return os.path.join(self.opts.instances_path, uuid)

    def console_log_path(self, uuid: str) -> str:
        return os.path.join(self.instance_dir(uuid), "console.log")

    # --- build ---------------------------------------------------------------

    def build_domain(
        self,
        instance: base.InstanceSpec,
        disks: list,
        interfaces: list,
        volumes: list[base.VolumeRef],
        config_drive: str,
    ) -> lvxml.Domain:
        """The domain of ``instance`` as a typed builder (no I/O): see
        :func:`~compute_driver.virt.libvirt.domain_builder.build_domain`.

        :raises GuestConfigError: the flavor's extra specs or the image's
            properties are unknown, conflict, or cannot be met on this host.
        """
        return domain_builder.build_domain(
            instance,
            disks,
            interfaces,
            volumes,
            config_drive,
            host=self.host_facts or host_facts.HostFacts(cpus=1, virt_type=self.virt_type),
            virt_type=self.virt_type,
            console_log=self.console_log_path(instance.uuid),
        )

    def spawn(
        self,
        instance: base.InstanceSpec,
        disks: list,
        interfaces: list,
        volumes: list[base.VolumeRef],
    ) -> str:
        conn = self.host.get_connection()
        workdir = self.instance_dir(instance.uuid)
        os.makedirs(workdir, mode=0o711, exist_ok=True)
        config_drive = os.path.join(workdir, "config.iso")
        try:
            self._write_config_drive(instance, config_drive)
            if instance.flavor.extra_specs.get("hw:cpu_policy") == "dedicated":
                with self._pinning_lock:
                    self._refresh_pinned_cpus(conn)
                    virt_dom = self._define(instance, disks, interfaces, volumes, config_drive)
            else:
                virt_dom = self._define(instance, disks, interfaces, volumes, config_drive)
            try:
                self._start_wired(virt_dom, instance.uuid, bool(interfaces))
                # NOTE: asked of the domain in hand: a lookup by UUID and a
                # read of the metadata we just wrote would tell nothing more.
                return self._power_state(virt_dom)
            except (libvirt.libvirtError, exception.VirtError):
                if virt_dom.isActive():
                    virt_dom.destroy()
                virt_dom.undefineFlags(UNDEFINE_FLAGS)
                raise
        except libvirt.libvirtError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise exception.VirtError(
                operation="spawn", instance=instance.uuid, reason=exc.get_error_message()
            ) from exc
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _start_wired(self, virt_dom: libvirt.virDomain, uuid: str, has_ports: bool) -> None:
        """Start the guest; with ports, paused until every NIC is wired.

        NOTE: libvirt plugs a guest's taps into their bridges while the
        domain starts; starting paused and checking the live definition
        before the vCPUs run means a guest never runs unwired.
        """
        if not has_ports or self.virt_type == "test":
            virt_dom.create()
            return
        virt_dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        unwired = ports.unwired_interfaces(virt_dom.XMLDesc(0))
        if unwired:
            raise exception.VirtError(
                operation="spawn", instance=uuid, reason="NICs not wired: " + ", ".join(unwired)
            )
        virt_dom.resume()

    @staticmethod
    def _write_config_drive(instance: base.InstanceSpec, path: str) -> None:
        configdrive.build_iso(
            configdrive.ConfigDriveContents(
                instance_id=instance.uuid,
                hostname=configdrive.sanitize_hostname(instance.name),
                user_data=instance.user_data,
                interfaces=tuple(
                    configdrive.NetworkInterfaceConfig(
                        mac=p.mac, address=p.address, gateway=p.gateway
                    )
                    for p in instance.ports
                ),
            ),
            path,
        )

    def _define(
        self,
        instance: base.InstanceSpec,
        disks: list,
        interfaces: list,
        volumes: list[base.VolumeRef],
        config_drive: str,
    ) -> libvirt.virDomain:
        xml = self.build_domain(instance, disks, interfaces, volumes, config_drive).to_string()
        LOG.debug("Defining %s:\n%s", instance.uuid, xml)
        return self.host.get_connection().defineXML(xml)

    def _refresh_pinned_cpus(self, conn: libvirt.virConnect) -> None:
        """Note the CPUs that defined guests already pin (one XML read per domain)."""
        held = host_facts.pinned_cpus(
            lvxml.Domain.parse(d.XMLDesc()) for d in conn.listAllDomains()
        )
        host = self.host_facts or host_facts.HostFacts(cpus=1, virt_type=self.virt_type)
        self.host_facts = dataclasses.replace(host, pinned_cpus=held)

    # --- lookups -------------------------------------------------------------

    def _lookup(self, uuid: str) -> libvirt.virDomain | None:
        try:
            return self.host.get_connection().lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise exception.VirtError(
                operation="lookup", instance=uuid, reason=exc.get_error_message()
            ) from exc

    @staticmethod
    def _metadata(virt_dom: libvirt.virDomain) -> lvxml.InstanceMetadata | None:
        try:
            text = virt_dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, lvxml.METADATA_NAMESPACE)
        except libvirt.libvirtError:
            return None  # not one of ours
        return lvxml.InstanceMetadata.parse(text)

    @staticmethod
    def _power_state_of(virt_dom: libvirt.virDomain, state: int) -> str:
        """Our power state of ``virt_dom`` in libvirt state ``state``."""
        if state == libvirt.VIR_DOMAIN_SHUTOFF and virt_dom.hasManagedSaveImage():
            return "suspended"
        return _POWER_STATES.get(state, "nostate")

    def _power_state(self, virt_dom: libvirt.virDomain) -> str:
        return self._power_state_of(virt_dom, virt_dom.state()[0])

    def _info(self, virt_dom: libvirt.virDomain, meta: lvxml.InstanceMetadata) -> base.InstanceInfo:
        state, _max_mem, memory_kib, vcpus, _cpu_time = virt_dom.info()
        power_state = self._power_state_of(virt_dom, state)
        # NOTE: our own metadata always carries these; str() keeps the types honest.
        return base.InstanceInfo(
            uuid=str(meta.uuid),
            name=str(meta.name),
            power_state=power_state,
            vcpus=vcpus,
            memory_mb=memory_kib // 1024,
            volumes=tuple(
                base.VolumeRef(str(v.id), str(v.backend), str(v.target_dev)) for v in meta.volumes
            ),
        )

    def _ours(self, uuid: str) -> tuple[libvirt.virDomain, lvxml.InstanceMetadata]:
        """The domain of one of our instances, with its metadata.

        :raises InstanceNotFound: no domain, or not one of ours.
        """
        virt_dom = self._lookup(uuid)
        meta = self._metadata(virt_dom) if virt_dom is not None else None
        if virt_dom is None or meta is None:
            raise exception.InstanceNotFound(instance=uuid)
        return virt_dom, meta

    def get_info(self, uuid: str) -> base.InstanceInfo:
        return self._info(*self._ours(uuid))

    def list_instances(self) -> list[base.InstanceInfo]:
        found = []
        for virt_dom in self.host.get_connection().listAllDomains():
            try:
                meta = self._metadata(virt_dom)
                if meta is not None:
                    found.append(self._info(virt_dom, meta))
            except libvirt.libvirtError as exc:
                # NOTE: a domain can vanish between the list and the look.
                LOG.debug("Skipping domain %s: %s", virt_dom.UUIDString(), exc)
        return found

    # --- teardown ------------------------------------------------------------

    def destroy(self, uuid: str) -> base.InstanceInfo | None:
        virt_dom = self._lookup(uuid)
        info = None
        if virt_dom is not None:
            meta = self._metadata(virt_dom)
            if meta is not None:
                info = self._info(virt_dom, meta)
            try:
                if virt_dom.isActive():
                    virt_dom.destroy()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # already stopped
                    raise exception.VirtError(
                        operation="destroy", instance=uuid, reason=exc.get_error_message()
                    ) from exc
            if meta is not None:
                # External snapshot overlays sit beside the volumes: remove them
                # while the domain still says where they are.
                self._snapshot_manager().purge(virt_dom, uuid)
            try:
                virt_dom.undefineFlags(UNDEFINE_FLAGS)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise exception.VirtError(
                        operation="undefine", instance=uuid, reason=exc.get_error_message()
                    ) from exc
        shutil.rmtree(self.instance_dir(uuid), ignore_errors=True)
        return info

    # --- power -----------------------------------------------------------------

    def _require(self, uuid: str) -> libvirt.virDomain:
        return self._ours(uuid)[0]

    @staticmethod
    def _state(virt_dom: libvirt.virDomain) -> int:
        return virt_dom.state()[0]

    def _do(self, operation: str, uuid: str, call, *args) -> None:
        try:
            call(*args)
        except libvirt.libvirtError as exc:
            raise exception.VirtError(
                operation=operation, instance=uuid, reason=exc.get_error_message()
            ) from exc

    def _wait_for_shutoff(
        self, virt_dom: libvirt.virDomain, uuid: str, timeout: float, retry_interval: float
    ) -> bool:
        """ACPI shutdown requests every ``retry_interval`` s until off or ``timeout``."""
        deadline = time.monotonic() + timeout
        next_request = 0.0
        while time.monotonic() < deadline:
            if not virt_dom.isActive():
                return True
            if time.monotonic() >= next_request:
                try:
                    virt_dom.shutdown()
                except libvirt.libvirtError as exc:
                    if virt_dom.isActive():
                        LOG.debug("Shutdown request to %s refused: %s", uuid, exc)
                next_request = time.monotonic() + retry_interval
            time.sleep(POLL_INTERVAL)
        return not virt_dom.isActive()

    def power_off(self, uuid: str, timeout: float, retry_interval: float) -> bool:
        virt_dom = self._require(uuid)
        if not virt_dom.isActive():
            return True
        if self._state(virt_dom) == libvirt.VIR_DOMAIN_PAUSED or timeout <= 0:
            clean = False  # a paused guest cannot hear ACPI
        else:
            clean = self._wait_for_shutoff(virt_dom, uuid, timeout, retry_interval)
        if not clean:
            LOG.warning("Server %s did not shut down within %s s; forcing it off", uuid, timeout)
            try:
                virt_dom.destroy()
            except libvirt.libvirtError as exc:
                if virt_dom.isActive():
                    raise exception.VirtError(
                        operation="power_off", instance=uuid, reason=exc.get_error_message()
                    ) from exc
        return clean

    def power_on(self, uuid: str) -> None:
        virt_dom = self._require(uuid)
        if virt_dom.isActive():
            return
        # NOTE: starting a domain that has a managed-save image restores it,
        # so this also resumes a suspended server.
        self._do("power_on", uuid, virt_dom.create)

    def reboot(self, uuid: str, hard: bool, timeout: float) -> bool:
        virt_dom = self._require(uuid)
        soft_ok = False
        if not hard and self._state(virt_dom) == libvirt.VIR_DOMAIN_RUNNING:
            soft_ok = self._wait_for_shutoff(virt_dom, uuid, timeout, max(timeout, 1.0))
            if not soft_ok:
                LOG.warning(
                    "Server %s ignored the ACPI shutdown for %s s; rebooting hard", uuid, timeout
                )
        if virt_dom.isActive():
            self._do("reboot", uuid, virt_dom.destroy)
        if virt_dom.hasManagedSaveImage():
            # A hard reboot of a suspended server boots it afresh.
            self._do("reboot", uuid, virt_dom.managedSaveRemove)
        self._do("reboot", uuid, virt_dom.create)
        return soft_ok

    def redefine(
        self,
        instance: base.InstanceSpec,
        disks: list,
        interfaces: list,
        volumes: list[base.VolumeRef],
    ) -> None:
        """Write the stopped guest's domain afresh from ``instance`` (and a new
        config drive), as a hard reboot does to repair a drifted definition.

        :raises InstanceStateConflict: the guest is running.
        :raises GuestConfigError, VirtError: nothing was changed.
        """
        virt_dom = self._require(instance.uuid)
        if virt_dom.isActive():
            raise exception.InstanceStateConflict(
                instance=instance.uuid, state="running", reason="stop it before redefining it"
            )
        config_drive = os.path.join(self.instance_dir(instance.uuid), "config.iso")
        self._write_config_drive(instance, config_drive)
        if virt_dom.hasManagedSaveImage():
            # Saved memory belongs to the old definition: a fresh boot follows.
            self._do("redefine", instance.uuid, virt_dom.managedSaveRemove)
        try:
            if instance.flavor.extra_specs.get("hw:cpu_policy") == "dedicated":
                with self._pinning_lock:
                    self._refresh_pinned_cpus(self.host.get_connection())
                    self._define(instance, disks, interfaces, volumes, config_drive)
            else:
                self._define(instance, disks, interfaces, volumes, config_drive)
        except libvirt.libvirtError as exc:
            raise exception.VirtError(
                operation="redefine", instance=instance.uuid, reason=exc.get_error_message()
            ) from exc

    def pause(self, uuid: str) -> None:
        virt_dom = self._require(uuid)
        if self._state(virt_dom) != libvirt.VIR_DOMAIN_PAUSED:
            self._do("pause", uuid, virt_dom.suspend)

    def unpause(self, uuid: str) -> None:
        virt_dom = self._require(uuid)
        if self._state(virt_dom) == libvirt.VIR_DOMAIN_PAUSED:
            self._do("unpause", uuid, virt_dom.resume)

    def suspend(self, uuid: str) -> None:
        virt_dom = self._require(uuid)
        if virt_dom.isActive():
            self._do("suspend", uuid, virt_dom.managedSave)

    # --- host and console ----------------------------------------------------

    def get_host_resources(self) -> base.HostResources:
        conn = self.host.get_connection()
        arch, memory_mb, cpus = conn.getInfo()[:3]
        return base.HostResources(
            vcpus=cpus,
            memory_mb=memory_mb,
            arch=arch,
            virt_type=self.virt_type,
            hypervisor=self._hypervisor[0],
            hypervisor_version=self._hypervisor[1],
        )

    def get_diagnostics(self, uuid: str) -> dict[str, Any]:
        virt_dom, meta = self._ours(uuid)
        groups = (
            libvirt.VIR_DOMAIN_STATS_STATE
            | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
            | libvirt.VIR_DOMAIN_STATS_BALLOON
            | libvirt.VIR_DOMAIN_STATS_VCPU
            | libvirt.VIR_DOMAIN_STATS_INTERFACE
            | libvirt.VIR_DOMAIN_STATS_BLOCK
        )
        try:
            # NOTE: one bulk-stats call for one domain instead of six getters.
            ((_dom, stats),) = self.host.get_connection().domainListGetStats([virt_dom], groups)
        except libvirt.libvirtError as exc:
            raise exception.VirtError(
                operation="diagnostics", instance=uuid, reason=exc.get_error_message()
            ) from exc
        diagnostics: dict[str, Any] = {"power_state": self._info(virt_dom, meta).power_state}
        diagnostics.update(
            {
                key: value
                for key, value in sorted(stats.items())
                if isinstance(value, (int, float, str))
            }
        )
        return diagnostics

    def console_output(self, uuid: str, lines: int) -> str:
        self.get_info(uuid)  # InstanceNotFound for strangers
        path = self.console_log_path(uuid)
        if not os.path.exists(path):
            return ""
        limit = self.opts.console_log_max_bytes
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            text = f.read(limit).decode("utf-8", errors="replace")
        return "\n".join(deque(text.splitlines(), maxlen=lines))

    # --- state sync: bulk power states, events, host availability ---------------

    @staticmethod
    def is_instance_domain(name: str, uuid: str) -> bool:
        """Whether a domain is one of ours, from its name and UUID alone (no libvirt call).

        NOTE: by name, not by ``<metadata>``: reading metadata is one call per
        domain, which the bulk sync and the event thread must not make.
        :func:`domain_name` builds the name from the UUID, so a foreign domain
        that merely took a ``cd-`` name (its UUID differs) is not counted.
        """
        return name == domain_name(uuid)

    def power_states(self) -> dict[str, str]:
        # NOTE: two calls whatever the number of domains: one getAllDomainStats
        # (state only), plus one listing of managed-save images when some
        # domain of ours is shut off (a shut-off domain with an image is
        # "suspended"). A domain left out of the answer (it vanished, or its
        # driver could not answer at once) is absent, which means unknown.
        try:
            records = self.host.get_all_domain_stats(libvirt.VIR_DOMAIN_STATS_STATE)
        except libvirt.libvirtError as exc:
            raise exception.VirtError(
                operation="power_states", instance="all servers", reason=exc.get_error_message()
            ) from exc
        states: dict[str, str] = {}
        shut_off = False
        for virt_dom, stats in records:
            uuid = virt_dom.UUIDString()
            if not self.is_instance_domain(virt_dom.name(), uuid) or "state.state" not in stats:
                continue
            state = stats["state.state"]
            states[uuid] = _POWER_STATES.get(state, "nostate")
            shut_off = shut_off or state == libvirt.VIR_DOMAIN_SHUTOFF
        if shut_off:
            try:
                saved = self.host.managed_save_uuids()
            except libvirt.libvirtError as exc:
                raise exception.VirtError(
                    operation="power_states", instance="all servers", reason=exc.get_error_message()
                ) from exc
            for uuid in saved:
                if states.get(uuid) == "shutdown":
                    states[uuid] = "suspended"
        return states

    def register_event_callback(self, callback: Callable[[events.DomainEvent], None]) -> None:
        self.host.events.add_callback(callback)

    def register_host_state_callback(self, callback: Callable[[bool, str], None]) -> None:
        self.host.on_state_change(callback)

    def start_events(self, stopped_delay: float | None = None) -> None:
        """See :meth:`ComputeDriver.start_events`.

        :param stopped_delay: seconds a stop is held back, dropped if the
            guest starts again meanwhile (a reboot is not a stop); default
            ``[libvirt] stopped_event_delay``.
        """
        delay = self.opts.stopped_event_delay if stopped_delay is None else stopped_delay
        self.host.start_events(self.is_instance_domain, delay)

    def stop_events(self) -> None:
        self.host.stop_events()

    def expect_device_removed(self, uuid: str, alias: str) -> None:
        """Listen for the unplug of ``alias``: call before asking libvirt to detach it."""
        self.host.events.expect_device_removed(uuid, alias)

    def wait_for_device_removed(
        self, uuid: str, alias: str, timeout: float
    ) -> events.DeviceEvent | None:
        """The outcome of unplugging ``alias`` (see ``DomainEventHandler``), None on timeout."""
        return self.host.events.wait_for_device_removed(uuid, alias, timeout)

    # --- volumes ---------------------------------------------------------------

    def _volume_attacher(self) -> VolumeAttacher:
        return VolumeAttacher(lambda dom: self._ours(dom.UUIDString())[1], self.host.events)

    def attach_volume(self, uuid: str, disk: Any, volume: base.VolumeRef) -> str:
        return self._volume_attacher().attach(self._require(uuid), uuid, disk, volume)

    def detach_volume(self, uuid: str, volume_id: str, timeout: float) -> None:
        self._volume_attacher().detach(self._require(uuid), uuid, volume_id, timeout)

    def extend_volume(self, uuid: str, volume_id: str, size_bytes: int) -> None:
        self._volume_attacher().extend(self._require(uuid), uuid, volume_id, size_bytes)

    # --- interfaces -------------------------------------------------------------

    def _interface_attacher(self) -> InterfaceAttacher:
        return InterfaceAttacher(lambda dom: self._ours(dom.UUIDString())[1], self.host.events)

    def attach_interface(
        self, uuid: str, interface: Any, port_id: str, network_id: str, mac: str
    ) -> None:
        ref = lvxml.PortRef(id=port_id, network=network_id, mac=mac)
        self._interface_attacher().attach(self._require(uuid), uuid, interface, ref)

    def detach_interface(self, uuid: str, port_id: str, timeout: float) -> None:
        self._interface_attacher().detach(self._require(uuid), uuid, port_id, timeout)

    # --- snapshots -------------------------------------------------------------

    def _snapshot_manager(self) -> Any:
        """The snapshot code, built on first use with ``[snapshots]`` registered."""
        # NOTE: imported here: only the snapshot calls need it, and the
        # option group is registered idempotently, so a driver built on a
        # ConfigOpts without [snapshots] still works.
        from compute_driver.conf import snapshots as snapshots_conf

        manager = self.__dict__.get("_snapshots")
        if manager is None:
            snapshots_conf.register_opts(self.conf)
            manager = snapshots.SnapshotManager(self.conf.snapshots.max_snapshots_per_instance)
            self.__dict__["_snapshots"] = manager
        return manager

    def snapshot_create(
        self, uuid: str, name: str, kind: str, quiesce: bool = False, description: str = ""
    ) -> base.SnapshotInfo:
        virt_dom, meta = self._ours(uuid)
        info: base.SnapshotInfo = self._snapshot_manager().create(
            virt_dom,
            uuid,
            name,
            kind,
            quiesce,
            description,
            require_quiesce=bool(meta.require_quiesce),
        )
        return info

    def snapshot_list(self, uuid: str) -> list[base.SnapshotInfo]:
        found: list[base.SnapshotInfo] = self._snapshot_manager().list_snapshots(
            self._require(uuid), uuid
        )
        return found

    def snapshot_revert(self, uuid: str, name: str) -> None:
        self._snapshot_manager().revert(self._require(uuid), uuid, name)

    def snapshot_delete(self, uuid: str, name: str) -> None:
        self._snapshot_manager().delete(self._require(uuid), uuid, name)

    def snapshot_purge(self, uuid: str) -> None:
        """Forget all snapshots of a stopped guest and remove their overlay files.

        Call before undefining the domain (libvirt refuses to undefine a
        domain that has snapshot metadata). Idempotent; a missing guest is
        a no-op.

        :raises SnapshotConflict: the guest is running.
        """
        virt_dom = self._lookup(uuid)
        if virt_dom is not None and self._metadata(virt_dom) is not None:
            self._snapshot_manager().purge(virt_dom, uuid)


def _version_string(version: int) -> str:
    return "%d.%d.%d" % (version // 1000000, version // 1000 % 1000, version % 1000)
