"""The agent's instance endpoint: the server methods of the compute API, version 1.0.

The agent keeps no database. What it built is in libvirt (with our
metadata), so every request is answered from there and every request is
idempotent by instance UUID. What this endpoint shares with the volume and
port endpoints (driver, backends, network plugins, instance locks, the
scheduler client) is the host object's (:mod:`compute_driver.agent.host`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

import oslo_messaging as messaging

from compute_driver import disk_image, exception
from compute_driver.agent.host import AgentHost, compute_method
from compute_driver.rpc import schemas
from compute_driver.rpc.endpoint import request_id
from compute_driver.states import VM_STATE_OF_POWER
from compute_driver.virt.base import InstanceSpec, VolumeRef

LOG = logging.getLogger(__name__)

API = "compute"
ROOT_TARGET_DEV = "vda"
DEFAULT_CONSOLE_LINES = 100
#: Seconds after a build or power action during which a hypervisor event
#: that shows the state the action reported is taken as its echo.
ECHO_WINDOW = 30.0


def root_volume_id(instance_uuid: str) -> str:
    return instance_uuid + "_root"


class ComputeManager:
    """Serves the server methods of topic ``compute`` for ``host``."""

    target = messaging.Target(version="1.0")

    def __init__(self, host: AgentHost) -> None:
        self.host = host
        self._builds = threading.BoundedSemaphore(host.conf.agent.max_concurrent_builds)
        self._snapshots = threading.BoundedSemaphore(host.conf.snapshots.max_concurrent_snapshots)
        # uuid -> (power state, monotonic deadline): what a build or action
        # just reported, so that the event it caused is not reported again.
        self._echoes: dict[str, tuple[str, float]] = {}
        self._echoes_guard = threading.Lock()
        #: When this agent started (UTC), to tell builds it missed from builds on their way.
        self.started_at = datetime.datetime.now(datetime.UTC).replace(microsecond=0, tzinfo=None)

    def _forget(self, uuid: str) -> None:
        """A deleted server: drop its lock and any echo expected of it."""
        self.host.forget_instance_lock(uuid)
        with self._echoes_guard:
            self._echoes.pop(uuid, None)

    def _expect_echo(self, uuid: str, power_state: str) -> None:
        """Note that ``power_state`` of ``uuid`` was just reported (call with its lock held).

        NOTE: libvirt delivers the event of our own create, start or stop on
        another thread, often after the action released the instance lock;
        reported again, it costs the scheduler a cast and a transaction that
        change nothing. Only the first event after the action, and only
        within ECHO_WINDOW, can be taken as its echo.
        """
        with self._echoes_guard:
            self._echoes[uuid] = (power_state, time.monotonic() + ECHO_WINDOW)

    def _is_echo(self, uuid: str, power_state: str) -> bool:
        with self._echoes_guard:
            expected = self._echoes.pop(uuid, None)
        return (
            expected is not None and expected[0] == power_state and time.monotonic() <= expected[1]
        )

    @compute_method
    def ping(self, ctxt: dict) -> dict[str, str]:
        return {"service": "compute-agent", "host": self.host.name, "version": self.target.version}

    @compute_method
    def build_instance(self, ctxt: dict, instance: dict[str, Any]) -> None:
        try:
            spec = InstanceSpec.from_payload(instance, self.host.conf.image.store_path)
        except exception.ComputeDriverError as exc:
            # NOTE: a cast: the scheduler waits for this report, never for an answer.
            self.host.scheduler.instance_update(
                self.host.name, instance["uuid"], "error", fault=exc.message
            )
            raise
        with self._builds, self.host.instance_lock(spec.uuid):
            try:
                info = self.host.driver.get_info(spec.uuid)
            except exception.InstanceNotFound:
                info = None
            if info is not None:
                LOG.info("Build of %s repeated: it exists, reporting its state", spec.uuid)
                self.host.scheduler.instance_update(
                    self.host.name, spec.uuid, VM_STATE_OF_POWER[info.power_state], info.power_state
                )
                return
            refused: exception.Invalid | None = None
            try:
                power_state = self._spawn(spec)
            except exception.Invalid as exc:
                refused = exc
            except Exception as exc:
                LOG.exception("Build of server %s (%s) failed", spec.name, spec.uuid)
                reason = exc.message if isinstance(exc, exception.ComputeDriverError) else repr(exc)
                self.host.scheduler.instance_update(
                    self.host.name, spec.uuid, "error", fault=reason
                )
                return
            if refused is not None:
                # NOTE: the flavor or image asks for what this host cannot
                # give: the caller's mistake, one line and no traceback
                # (logged outside the except clause, where oslo.log would
                # append the exception to a warning).
                LOG.warning(
                    "Build of server %s (%s) refused (request %s): %s",
                    spec.name,
                    spec.uuid,
                    request_id(ctxt),
                    refused.message,
                )
                self.host.scheduler.instance_update(
                    self.host.name, spec.uuid, "error", fault=refused.message
                )
                return
            LOG.info("Server %s (%s) is %s", spec.name, spec.uuid, power_state)
            self._expect_echo(spec.uuid, power_state)
            self.host.scheduler.instance_update(self.host.name, spec.uuid, "active", power_state)

    def _root_disk(self, spec: InstanceSpec) -> tuple[Any, VolumeRef]:
        """The root disk of ``spec`` and its disk builder: its boot volume, or
        a root volume made from the image on first use.

        NOTE: create_from_image is idempotent: an existing root disk is
        returned as it is, never recreated.
        """
        if spec.boot_volume is not None:
            disk = self.host.storage.disk_of(spec.boot_volume.to_wire())
            volume_id, backend_name = spec.boot_volume.id, spec.boot_volume.backend
        else:
            backend = self.host.storage.root(spec.root_backend)
            volume_id, backend_name = root_volume_id(spec.uuid), backend.name
            volume = backend.create_from_image(
                volume_id, spec.image, spec.flavor.root_gb, linked=spec.linked_root
            )
            disk = backend.disk_config(volume)
        disk.target_dev = ROOT_TARGET_DEV
        disk.target_bus = "virtio"
        return disk, VolumeRef(volume_id, backend_name, ROOT_TARGET_DEV)

    def _disks(self, spec: InstanceSpec) -> tuple[list[Any], list[VolumeRef]]:
        """Every disk of ``spec``: the root disk, then its attached data volumes."""
        root_disk, root = self._root_disk(spec)
        disks, refs = [root_disk], [root]
        for volume in spec.volumes:
            disk = self.host.storage.disk_of(volume.to_wire())
            disk.target_dev = volume.target_dev
            disk.target_bus = disk.target_bus or "virtio"
            disks.append(disk)
            refs.append(VolumeRef(volume.id, volume.backend, str(volume.target_dev)))
        return disks, refs

    def _spawn(self, spec: InstanceSpec) -> str:
        """Root disk, then the guest; on any failure, undo both.

        :returns: the guest's power state once started.
        """
        made_disk = False
        interfaces: list[Any] = []
        try:
            disks, volumes = self._disks(spec)
            made_disk = spec.boot_volume is None
            interfaces = self.host.networks.plug(spec.uuid, tuple(p.to_wire() for p in spec.ports))
            return self.host.driver.spawn(spec, disks, interfaces, volumes)
        except Exception:
            try:
                self.host.driver.destroy(spec.uuid)
            finally:
                if interfaces:
                    self.host.networks.unplug(spec.uuid, [p.to_wire() for p in spec.ports])
                if made_disk:
                    self.host.storage.root(spec.root_backend).delete_volume(
                        root_volume_id(spec.uuid)
                    )
            raise

    @compute_method
    def delete_instance(
        self, ctxt: dict, uuid: str, ports: list[dict[str, Any]] | None = None
    ) -> None:
        self._delete(uuid, ports or [])

    def _delete(self, uuid: str, ports: list[dict[str, Any]] | None = None) -> None:
        with self.host.instance_lock(uuid):
            try:
                info = self.host.driver.destroy(uuid)
                volumes = info.volumes if info else ()
                # NOTE: only the root disk made for the server goes with it;
                # data and boot volumes outlive it (the scheduler frees them).
                for volume in volumes:
                    if volume.id == root_volume_id(uuid) and volume.backend in self.host.storage:
                        self.host.storage[volume.backend].delete_volume(volume.id)
                if info is None:
                    # A build that failed, or a repeated delete: make sure no root disk stays.
                    self.host.storage.root().delete_volume(root_volume_id(uuid))
                if ports:
                    self.host.networks.unplug(uuid, ports)
            except exception.ComputeDriverError as exc:
                LOG.exception("Delete of %s failed", uuid)
                self.host.scheduler.instance_update(
                    self.host.name, uuid, "error", fault="delete failed: %s" % exc.message
                )
                return
        self._forget(uuid)
        LOG.info("Server %s deleted", uuid)
        self.host.scheduler.instance_deleted(self.host.name, uuid)

    # --- power actions ----------------------------------------------------------

    def _act(self, uuid: str, action: str, func: Callable[[], Any], starts: bool = False) -> None:
        """Run one power action, then report the state libvirt shows, and any fault.

        :param starts: the action starts the domain (again): the host's ports
            are made sure of first (``HostNetworks.ensure_plugged``).
        """
        fault = None
        with self.host.instance_lock(uuid):
            try:
                if starts:
                    self.host.networks.ensure_plugged()
                func()
            except exception.ComputeDriverError as exc:
                LOG.warning("%s of server %s failed: %s", action, uuid, exc)
                fault = "%s failed: %s" % (action, exc.message)
            try:
                info = self.host.driver.get_info(uuid)
            except exception.InstanceNotFound:
                LOG.warning("%s of server %s: no such domain here", action, uuid)
                self.host.scheduler.instance_update(
                    self.host.name,
                    uuid,
                    "error",
                    fault="%s: the domain is missing on %s" % (action, self.host.name),
                )
                return
            self._expect_echo(uuid, info.power_state)
        LOG.info("Server %s after %s: %s", uuid, action, info.power_state)
        self.host.scheduler.instance_update(
            self.host.name, uuid, VM_STATE_OF_POWER[info.power_state], info.power_state, fault=fault
        )

    @compute_method
    def stop_instance(self, ctxt: dict, uuid: str, timeout: int | None = None) -> None:
        opts = self.host.conf.libvirt
        wait = opts.shutdown_timeout if timeout is None else timeout
        self._act(
            uuid,
            "stop",
            lambda: self.host.driver.power_off(uuid, wait, opts.shutdown_retry_interval),
        )

    @compute_method
    def start_instance(self, ctxt: dict, uuid: str) -> None:
        self._act(uuid, "start", lambda: self.host.driver.power_on(uuid), starts=True)

    @compute_method
    def reboot_instance(
        self, ctxt: dict, uuid: str, hard: bool, instance: dict[str, Any] | None = None
    ) -> None:
        if hard and instance is not None:
            spec = InstanceSpec.from_payload(instance, self.host.conf.image.store_path)
            self._act(uuid, "hard reboot", lambda: self._rebuild_and_start(spec), starts=True)
            return
        timeout = self.host.conf.libvirt.shutdown_timeout
        self._act(
            uuid,
            "hard reboot" if hard else "reboot",
            lambda: self.host.driver.reboot(uuid, hard, timeout),
            starts=True,
        )

    def _rebuild_and_start(self, spec: InstanceSpec) -> None:
        """Hard reboot: stop at once, write the domain afresh from the
        scheduler's record (repairing any drift), and start it."""
        self.host.driver.power_off(spec.uuid, timeout=0, retry_interval=1)
        disks, volumes = self._disks(spec)
        interfaces = self.host.networks.plug(spec.uuid, tuple(p.to_wire() for p in spec.ports))
        self.host.driver.redefine(spec, disks, interfaces, volumes)
        self.host.driver.power_on(spec.uuid)

    @compute_method
    def pause_instance(self, ctxt: dict, uuid: str) -> None:
        self._act(uuid, "pause", lambda: self.host.driver.pause(uuid))

    @compute_method
    def unpause_instance(self, ctxt: dict, uuid: str) -> None:
        self._act(uuid, "unpause", lambda: self.host.driver.unpause(uuid))

    @compute_method
    def suspend_instance(self, ctxt: dict, uuid: str) -> None:
        self._act(uuid, "suspend", lambda: self.host.driver.suspend(uuid))

    @compute_method
    def resume_instance(self, ctxt: dict, uuid: str) -> None:
        self._act(uuid, "resume", lambda: self.host.driver.power_on(uuid), starts=True)

    # --- snapshots ------------------------------------------------------------------

    @compute_method
    def snapshot_create_instance(
        self,
        ctxt: dict,
        uuid: str,
        name: str,
        kind: str,
        quiesce: bool = False,
        description: str = "",
    ) -> None:
        with self._snapshots:
            self._act(
                uuid,
                "snapshot %s" % name,
                lambda: self.host.driver.snapshot_create(uuid, name, kind, quiesce, description),
            )

    @compute_method
    def snapshot_revert_instance(self, ctxt: dict, uuid: str, name: str) -> None:
        with self._snapshots:
            self._act(
                uuid,
                "revert to snapshot %s" % name,
                lambda: self.host.driver.snapshot_revert(uuid, name),
            )

    @compute_method
    def snapshot_delete_instance(self, ctxt: dict, uuid: str, name: str) -> None:
        with self._snapshots:
            self._act(
                uuid,
                "delete of snapshot %s" % name,
                lambda: self.host.driver.snapshot_delete(uuid, name),
            )

    @compute_method
    def list_instance_snapshots(self, ctxt: dict, uuid: str) -> list[dict[str, Any]]:
        return [dataclasses.asdict(s) for s in self.host.driver.snapshot_list(uuid)]

    @compute_method
    def export_root_disk(self, ctxt: dict, uuid: str, image: str) -> dict[str, Any]:
        """Write the root disk of a stopped server, flattened, as the disk of
        new image ``image``: into the export directory the scheduler made for
        it in the image store (``disk_image.export_dir``).

        NOTE: the message names the image by UUID, never a path: the file is
        created here, exclusively, under this host's own ``[image] store_path``.

        :raises InstanceNotFound: no such server here.
        :raises InvalidImage: no export of ``image`` is under way, or its disk exists.
        """
        with self.host.instance_lock(uuid):
            info = self.host.driver.get_info(uuid)
            if info.power_state not in ("shutdown", "crashed"):
                raise exception.InstanceStateConflict(
                    instance=uuid, state=info.power_state, reason="stop it first"
                )
            root = next((v for v in info.volumes if v.id == root_volume_id(uuid)), None)
            backend = self.host.storage.get(root.backend) if root else None
            if root is None or backend is None or not backend.describe().export:
                raise exception.Invalid(
                    reason="the root disk of %s is on a backend that cannot export volumes" % uuid
                )
            path = _reserve_export(self.host.conf.image.store_path, image)
            try:
                backend.export_volume(root.id, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
        return {"image": image}

    @compute_method
    def get_diagnostics(self, ctxt: dict, uuid: str) -> dict[str, Any]:
        return self.host.driver.get_diagnostics(uuid)

    @compute_method
    def get_console_output(self, ctxt: dict, uuid: str, lines: int = DEFAULT_CONSOLE_LINES) -> str:
        return self.host.driver.console_output(uuid, lines)

    @compute_method
    def get_instance_info(self, ctxt: dict, uuid: str) -> dict[str, Any]:
        info = self.host.driver.get_info(uuid)
        return {
            "uuid": info.uuid,
            "name": info.name,
            "power_state": info.power_state,
            "vcpus": info.vcpus,
            "memory_mb": info.memory_mb,
        }

    # --- hypervisor events --------------------------------------------------------

    def handle_virt_event(self, event: Any) -> None:
        """A guest changed power state by itself (or an operator used virsh)."""
        power_state = getattr(event, "power_state", None)
        if power_state is None:
            return  # device events serve the driver's own waiters
        lock = self.host.instance_lock(event.uuid)
        if not lock.acquire(blocking=False):
            return  # a build or action in flight reports the state itself when it ends
        try:
            if self._is_echo(event.uuid, power_state):
                LOG.debug("Server %s: %s, as already reported", event.uuid, power_state)
                return
        finally:
            lock.release()
        self.host.scheduler.instance_power_changed(self.host.name, event.uuid, power_state)

    def handle_host_state(self, available: bool, reason: str) -> None:
        """The hypervisor went away or came back: disable or re-enable this host."""
        if not available:
            LOG.warning("Hypervisor unavailable (%s): disabling host %s", reason, self.host.name)
            # NOTE: the reason is libvirt's message, which may span lines;
            # the scheduler refuses control characters in reasons.
            self.host.scheduler.set_host_enabled_automatically(
                self.host.name, False, schemas.free_text("hypervisor: " + reason)
            )
            return
        LOG.info("Hypervisor available again: re-enabling host %s", self.host.name)
        self.host.scheduler.set_host_enabled_automatically(
            self.host.name, True, schemas.free_text(reason)
        )
        # Events were lost while it was away: say what every guest is now.
        for uuid, power_state in self.host.driver.power_states().items():
            self.host.scheduler.instance_power_changed(self.host.name, uuid, power_state)

    # --- periodic --------------------------------------------------------------

    def report(self) -> None:
        """Send this host's resources, capabilities and instance states to the scheduler."""
        resources = self.host.driver.get_host_resources()
        disk_gb = self.host.storage.root().capacity().total // 1024**3
        # NOTE: one bulk hypervisor call, not one per guest.
        instances = [
            {"uuid": uuid, "power_state": state}
            for uuid, state in self.host.driver.power_states().items()
        ]
        self.host.scheduler.report_host(
            self.host.name,
            resources={
                "vcpus": resources.vcpus,
                "memory_mb": resources.memory_mb,
                "disk_gb": disk_gb,
            },
            capabilities={
                "virt_type": resources.virt_type,
                "arch": resources.arch,
                "hypervisor": resources.hypervisor,
                "hypervisor_version": resources.hypervisor_version,
                "network_plugins": sorted(self.host.networks),
                "storage_backends": sorted(self.host.storage),
                "shared_storage_backends": sorted(
                    name for name, b in self.host.storage.items() if b.describe().shared
                ),
                # NOTE: the plugin reports its tunnel endpoint itself (its own option).
                **(
                    {"tunnel_ip": tunnel_ip}
                    if (tunnel_ip := self.host.networks.tunnel_endpoint())
                    else {}
                ),
            },
            instances=instances,
        )

    def reconcile(self) -> None:
        """At start: compare what libvirt runs with what the scheduler expects.

        Nothing is silent: a server the scheduler expects but libvirt lacks
        goes to ERROR with the reason; a domain of ours the scheduler does
        not know is handled by ``[agent] unknown_domain_policy``.
        """
        here = {i.uuid: i for i in self.host.driver.list_instances()}
        expected = {
            i["uuid"]: i for i in self.host.reconcile_scheduler.host_instances(self.host.name)
        }
        for uuid, record in expected.items():
            task = record["task_state"]
            if task == "deleting":
                # The delete may have died with the old agent: finish it.
                self._delete(uuid)
            elif uuid in here:
                if task:
                    # A build or action in flight when the agent stopped: say where it got to.
                    power = here[uuid].power_state
                    self.host.scheduler.instance_update(
                        self.host.name, uuid, VM_STATE_OF_POWER[power], power
                    )
            elif record["vm_state"] != "error":
                if task == "spawning" and self._dispatched_since_start(record):
                    # NOTE: placed after this agent started: its build is on
                    # its way (or running now), not interrupted.
                    continue
                if task == "spawning":
                    fault = "the build was interrupted: the agent on %s restarted" % self.host.name
                else:
                    fault = "its domain is missing on %s" % self.host.name
                LOG.warning("Server %s: %s", uuid, fault)
                self.host.scheduler.instance_update(self.host.name, uuid, "error", fault=fault)
        self._handle_unknown_domains(sorted(set(here) - set(expected)))
        self.host.networks.resync(self.host.reconcile_scheduler.host_networks(self.host.name))
        LOG.info("Reconciled: %d instance(s) here, %d expected", len(here), len(expected))

    def _dispatched_since_start(self, record: dict[str, Any]) -> bool:
        """Whether the scheduler placed ``record`` here after this agent started."""
        stamp = record.get("updated_at")
        if not stamp:
            return False
        placed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
        return placed >= self.started_at - datetime.timedelta(seconds=1)

    def _handle_unknown_domains(self, uuids: list[str]) -> None:
        policy = self.host.conf.agent.unknown_domain_policy
        for uuid in uuids:
            LOG.warning(
                "Domain of server %s is ours but the scheduler does not know it; policy %s",
                uuid,
                policy,
            )
            try:
                if policy == "stop":
                    self.host.driver.power_off(
                        uuid,
                        self.host.conf.libvirt.shutdown_timeout,
                        self.host.conf.libvirt.shutdown_retry_interval,
                    )
                elif policy == "reap":
                    self._delete(uuid)
            except exception.ComputeDriverError as exc:
                LOG.error("Could not %s unknown server %s: %s", policy, uuid, exc)


def _reserve_export(store_root: str, image: str) -> str:
    """Create, exclusively, the empty disk file of an export of new image
    ``image`` in its work directory; return its path.

    :raises InvalidImage: the work directory is missing (or not a real
        directory), or the disk is already there.
    """
    work = disk_image.export_dir(store_root, image)
    try:
        st = os.lstat(work)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise exception.InvalidImage(image=image, reason="no export of it is under way")
    path = os.path.join(work, disk_image.EXPORT_DISK)
    try:
        # NOTE: a second request for the same image, or a link planted in the
        # disk's place, fails here instead of overwriting a file.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        raise exception.InvalidImage(image=image, reason="its disk is already written") from None
    return path
