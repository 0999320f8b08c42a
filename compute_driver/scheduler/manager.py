"""The scheduler's RPC endpoint: the scheduler API, version 1.0.

Every method validates its payload first (``rpc_method``) and answers with
plain dicts. Requests that name a UUID are idempotent: repeating one
changes nothing more.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver import disk_image, exception, guest_properties, notifications, states
from compute_driver.objects import decode_user_data
from compute_driver.rpc import compute_api
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler import placement, scope
from compute_driver.scheduler.aggregates import AggregateManager
from compute_driver.scheduler.host_view import HostView
from compute_driver.scheduler.imagestore import ImageStore, agent_image
from compute_driver.scheduler.networks import NetworkManager
from compute_driver.scheduler.scope import scheduler_method
from compute_driver.scheduler.store import Store
from compute_driver.scheduler.volumes import VolumeManager, agent_volume

LOG = logging.getLogger(__name__)

API = "scheduler"


class SchedulerManager:
    """Serves topic ``scheduler``: servers, hosts, flavors, images (agent reports: reports.py)."""

    target = messaging.Target(version="1.0")

    def __init__(self, conf: cfg.ConfigOpts, store: Store, compute: compute_api.ComputeAPI) -> None:
        self.conf = conf
        self.store = store
        self.compute = compute
        self.images = ImageStore(
            conf.image.store_path,
            conf.image.import_path,
            disk_image.Limits(
                max_bytes=conf.image.max_image_gb * 1024**3,
                max_virtual_bytes=conf.image.max_virtual_gb * 1024**3,
                vmdk_types=tuple(conf.image.vmdk_allowed_types),
            ),
        )
        self._placement_cache: placement.Placement | None = None
        #: The volume methods, a second endpoint on the same RPC server.
        self.volumes = VolumeManager(conf, store, compute)
        #: The network methods, a third endpoint on the same RPC server.
        self.networks = NetworkManager(conf, store, compute)
        #: The hosts as placement sees them (see host_view.py).
        self.host_view = HostView(
            lambda: self.aggregates.annotate(self.store.list_hosts(self._down_after)),
            conf.scheduler.host_view_ttl,
        )
        #: Aggregates, zones and server groups, a fourth endpoint.
        self.aggregates = AggregateManager(conf, store, on_change=self.host_view.invalidate)
        self.notifier = notifications.Notifier(conf, "compute-scheduler:%s" % conf.host)

    @property
    def _down_after(self) -> int:
        return self.conf.scheduler.service_down_time

    def _placement(self) -> placement.Placement:
        """The configured filters and weighers, loaded on first use and kept.

        NOTE: loading them scans the entry points and imports the plugins;
        once per process, not once per create.
        """
        if self._placement_cache is None:
            self._placement_cache = placement.Placement(self.conf)
        return self._placement_cache

    def _limits(self) -> placement.Limits:
        opts = self.conf.scheduler
        return placement.Limits(
            cpu_ratio=opts.cpu_allocation_ratio,
            ram_ratio=opts.ram_allocation_ratio,
            disk_ratio=opts.disk_allocation_ratio,
            reserved_mb=opts.reserved_host_memory_mb,
        )

    @scheduler_method
    def ping(self, context: RequestContext) -> dict[str, str]:
        return {"service": "compute-scheduler", "version": self.target.version}

    # --- servers -------------------------------------------------------------

    @scheduler_method
    def create_server(
        self,
        context: RequestContext,
        uuid: str,
        name: str,
        flavor: str,
        image: str,
        project: str | None = None,
        host: str | None = None,
        user_data: str | None = None,
        root_clone: str = "linked",
        root_backend: str | None = None,
        boot_volume: str | None = None,
        networks: list[str] | None = None,
        availability_zone: str | None = None,
        group: str | None = None,
    ) -> dict[str, Any]:
        project = scope.owner(context, project, "create_server")
        decode_user_data(user_data)  # InvalidPayload before anything is stored
        if availability_zone is not None:
            self.aggregates.check_zone(availability_zone)
        group_rec = self.aggregates.group_for(group, project, context) if group else None
        flavor_rec, image_rec = self.store.get_flavor_and_image(flavor, image, context)
        if host is not None:
            self.store.get_host(host, self._down_after)  # HostNotFound before anything is stored
        boot = self.volumes.bootable(boot_volume, project, uuid, context) if boot_volume else None
        for network in networks or ():
            self.networks.of_project(network, project, uuid, context)  # before anything is stored
        record, created = self.store.create_instance(
            uuid=uuid,
            name=name,
            project=project,
            flavor_name=flavor_rec["name"],
            vcpus=flavor_rec["vcpus"],
            memory_mb=flavor_rec["memory_mb"],
            root_gb=flavor_rec["root_gb"],
            extra_specs=flavor_rec["extra_specs"],
            image_uuid=image_rec["uuid"],
            user_data=user_data,
            root_backend=root_backend,
            root_clone=root_clone,
            availability_zone=availability_zone,
            group_uuid=group_rec["uuid"] if group_rec else None,
        )
        if not created:
            scope.repeated(context, record["project"], uuid)
            LOG.info("create_server %s repeated: returning the existing record", uuid)
            return record
        self.notifier.info("instance.create.start", record)
        ports: list[dict[str, Any]] = []
        try:
            if boot is not None:
                boot = self.volumes.claim_boot_volume(boot, uuid)
            if networks:
                ports = self.networks.allocate(uuid, project, networks, context)
        except exception.ComputeDriverError as exc:
            # NOTE: the record exists already: never leave it scheduling.
            self.store.fail_instance(uuid, exc.message)
            raise
        return self._schedule(
            record, image_rec, user_data, root_clone, boot=boot, ports=ports, forced_host=host
        )

    def _schedule(
        self,
        record: dict[str, Any],
        image_rec: dict[str, Any],
        user_data: str | None,
        root_clone: str,
        boot: dict[str, Any] | None,
        ports: list[dict[str, Any]],
        forced_host: str | None = None,
    ) -> dict[str, Any]:
        """Place a server that waits for a host, claim there, and cast its build.

        Used by create_server and by the reschedule of a failed build (then
        ``record["attempts"]`` names the hosts to skip).

        :raises NoValidHost: no host can take it (the server is ERROR).
        :raises BuildFailed: the chosen agent cannot be reached (the server is ERROR).
        """
        uuid, name, root_backend = record["uuid"], record["name"], record.get("root_backend")
        # NOTE: the storage_backends filter explains hosts without the
        # backends the root disk needs; a local boot volume pins its host.
        needed = [root_backend] if root_backend else []
        if boot is not None:
            needed.append(boot["backend"])
        request = placement.RequestSpec.from_records(
            name,
            {
                "vcpus": record["vcpus"],
                "memory_mb": record["memory_mb"],
                "root_gb": record["root_gb"],
                "extra_specs": record["extra_specs"],
            },
            image_rec,
            tried_hosts=[a["host"] for a in record.get("attempts") or ()],
            storage_backends=needed,
            availability_zone=record.get("availability_zone"),
            group=self.aggregates.group_for(record["group"], record["project"])
            if record.get("group")
            else None,
        )
        hosts, fresh = self.host_view.hosts()
        selection, chosen = self._claim_first(hosts, request, record, forced_host, boot)
        if chosen is None and not fresh:
            # NOTE: the view may be behind (another scheduler freed room, an
            # operator enabled a host): "no valid host" only from a fresh read.
            self.host_view.invalidate()
            hosts, _ = self.host_view.hosts()
            selection, chosen = self._claim_first(hosts, request, record, forced_host, boot)
        if chosen is None:
            why = selection.explain()
            tried = record.get("attempts") or []
            if tried:
                why = "%s; earlier attempts: %s" % (
                    why,
                    "; ".join("%s: %s" % (a["host"], a["fault"]) for a in tried),
                )
            self.store.fail_instance(uuid, "No valid host: %s" % why)
            self.notify_failure("instance.create.error", uuid)
            raise exception.NoValidHost(instance=name, reason=why, filters=selection.report())
        LOG.info("Server %s (%s) placed on %s", name, uuid, chosen)
        # NOTE: built from the records in hand: no further reads on the hot path.
        record = dict(record, host=chosen, task_state="spawning")
        try:
            payload = self._payload(record, image_rec, user_data)
            payload["root_clone"] = root_clone
            if root_backend is not None:
                payload["root_backend"] = root_backend
            if boot is not None:
                payload["boot_volume"] = agent_volume(boot)
            if ports:
                payload["ports"] = ports
                self.networks.networks.bind(uuid, chosen)
            self.compute.build_instance(chosen, payload)
        except Exception as exc:
            self.store.fail_instance(uuid, "cannot reach the agent on %s: %s" % (chosen, exc))
            self.notify_failure("instance.create.error", uuid)
            raise exception.BuildFailed(
                instance=name, reason="cannot reach %s: %s" % (chosen, exc)
            ) from exc
        self.networks.fan_out(sorted({p["network"]["id"] for p in ports}))
        return record

    def _claim_first(
        self,
        hosts: list[placement.HostState],
        request: placement.RequestSpec,
        record: dict[str, Any],
        forced_host: str | None,
        boot: dict[str, Any] | None,
    ) -> tuple[placement.Selection, str | None]:
        """Filter and weigh ``hosts``, then claim on the best that takes the claim.

        :returns: the selection (its report explains the hosts left out) and
            the host claimed on, or None when no candidate took the claim.
        """
        uuid = record["uuid"]
        if forced_host is not None:
            hosts = [h for h in hosts if h.name == forced_host]
        if boot is not None and not boot["shared"]:
            hosts = [h for h in hosts if h.name == boot["host"]]
        try:
            selection = self._placement().select(
                hosts, request, list_instances=self.store.list_instances
            )
        except Exception as exc:
            # NOTE: the record exists already: never leave it scheduling.
            self.store.fail_instance(uuid, "placement failed: %s" % exc)
            raise
        limits = self._limits().as_dict()
        for candidate in selection.candidates:
            if not self.store.claim(
                candidate.name, request.vcpus, request.memory_mb, request.disk_gb, limits, uuid
            ):
                selection.claim_failed(candidate.name)
                # NOTE: the view thought it had room: read it again next time.
                self.host_view.invalidate()
                continue
            if request.group_policy == "anti-affinity" and self.aggregates.members_on(
                record["group"], candidate.name, other_than=uuid
            ):
                # NOTE: the late check: a member placed at the same moment
                # passed the same filters; the claim decides who stays.
                self.store.undo_claim(uuid, candidate.name)
                selection.claim_failed(candidate.name, "another member of its group got here first")
                continue
            self.host_view.consume(
                candidate.name, request.vcpus, request.memory_mb, request.disk_gb
            )
            return selection, candidate.name
        return selection, None

    def reschedule(self, record: dict[str, Any]) -> None:
        """Place a server whose build failed on another host (its attempts are skipped)."""
        uuid = record["uuid"]
        try:
            image_rec = self.store.get_image(record["image"])
            attached = self.volumes.volumes.attached(uuid)
            boot = next((v for v in attached if v["boot"]), None)
            ports = self.networks.agent_ports(uuid)
            old_networks = sorted({p["network"]["id"] for p in ports})
            self._schedule(
                record,
                image_rec,
                self.store.get_instance_user_data(uuid),
                record.get("root_clone") or "linked",
                boot=boot,
                ports=ports,
            )
            LOG.info(
                "Server %s rescheduled after %d failed build(s)", uuid, len(record["attempts"])
            )
            self.networks.fan_out(old_networks)
        except exception.ComputeDriverError as exc:
            # NOTE: _schedule has put the server in ERROR with the reason.
            LOG.warning("Server %s could not be rescheduled: %s", uuid, exc)

    def _build_payload(self, uuid: str, image: dict[str, Any]) -> dict[str, Any]:
        """The build payload of an existing server, read from the store, with
        its root backend, boot volume and attached volumes."""
        instance = self.store.get_instance(uuid)
        payload = self._payload(instance, image, self.store.get_instance_user_data(uuid))
        payload["root_clone"] = instance["root_clone"]
        if instance["root_backend"]:
            payload["root_backend"] = instance["root_backend"]
        attached = self.volumes.volumes.attached(uuid)
        for volume in attached:
            if volume["boot"]:
                payload["boot_volume"] = agent_volume(volume)
        data = [agent_volume(v) for v in attached if not v["boot"] and v["target_dev"]]
        if data:
            payload["volumes"] = data
        ports = self.networks.agent_ports(uuid)
        if ports:
            payload["ports"] = ports
        return payload

    @staticmethod
    def _payload(
        instance: dict[str, Any], image: dict[str, Any], user_data: str | None
    ) -> dict[str, Any]:
        """What an agent needs to build ``instance`` (the flavor as copied at create time)."""
        payload: dict[str, Any] = {
            "uuid": instance["uuid"],
            "name": instance["name"],
            "project": instance["project"],
            "flavor": {
                "name": instance["flavor"],
                "vcpus": instance["vcpus"],
                "memory_mb": instance["memory_mb"],
                "root_gb": instance["root_gb"],
                "extra_specs": instance["extra_specs"],
            },
            "image": agent_image(image),
            "created_at": instance["created_at"],
        }
        if user_data:
            payload["user_data"] = user_data
        return payload

    @scheduler_method
    def list_servers(
        self,
        context: RequestContext,
        project: str | None = None,
        host: str | None = None,
        all_projects: bool = False,
    ) -> list:
        return self.store.list_instances(
            project=scope.list_project(context, project, all_projects), host=host
        )

    @scheduler_method
    def show_server(self, context: RequestContext, server: str) -> dict[str, Any]:
        return self.store.get_instance(server, context=context)

    @scheduler_method
    def delete_server(self, context: RequestContext, server: str) -> dict[str, Any]:
        record, needs_agent = self.store.begin_delete(server, context)
        self.notifier.info("instance.delete.start", record)
        if not needs_agent and record["vm_state"] == "deleted":
            self.notifier.info("instance.delete.end", record)
        if needs_agent:
            ports = self.networks.agent_ports(record["uuid"])
            self.compute.delete_instance(record["host"], record["uuid"], ports)
        return record

    @scheduler_method
    def server_action(self, context: RequestContext, server: str, action: str) -> dict[str, Any]:
        allowed, task = states.SERVER_ACTIONS[action]
        record = self.store.begin_task(server, allowed, task, context)
        host, uuid = record["host"], record["uuid"]
        try:
            if action == "stop":
                self.compute.stop_instance(host, uuid)
            elif action == "reboot":
                self.compute.reboot_instance(host, uuid, hard=False)
            elif action == "hard-reboot":
                # NOTE: the whole record goes along: the agent keeps no
                # database, and a hard reboot rebuilds the domain from it.
                image = self.store.get_image(record["image"])
                self.compute.reboot_instance(
                    host, uuid, hard=True, instance=self._build_payload(uuid, image)
                )
            else:
                self.compute.instance_action(host, uuid, "%s_instance" % action)
        except exception.ComputeDriverError:
            self.store.update_instance(uuid, task_state=None)
            raise
        return record

    def _snapshot_task(
        self, context: RequestContext, server: str, task: str, method: str, **payload: Any
    ) -> dict[str, Any]:
        allowed, task_state = states.SNAPSHOT_TASKS[task]
        record = self.store.begin_task(server, allowed, task_state, context)
        try:
            self.compute.snapshot_instance(record["host"], method, record["uuid"], **payload)
        except exception.ComputeDriverError:
            self.store.update_instance(record["uuid"], task_state=None)
            raise
        return record

    @scheduler_method
    def create_server_snapshot(
        self,
        context: RequestContext,
        server: str,
        name: str,
        kind: str = "internal",
        quiesce: bool = False,
        description: str = "",
    ) -> dict[str, Any]:
        return self._snapshot_task(
            context,
            server,
            "create",
            "snapshot_create_instance",
            name=name,
            kind=kind,
            quiesce=quiesce,
            description=description,
        )

    @scheduler_method
    def revert_server_snapshot(
        self, context: RequestContext, server: str, name: str
    ) -> dict[str, Any]:
        return self._snapshot_task(context, server, "revert", "snapshot_revert_instance", name=name)

    @scheduler_method
    def delete_server_snapshot(
        self, context: RequestContext, server: str, name: str
    ) -> dict[str, Any]:
        return self._snapshot_task(context, server, "delete", "snapshot_delete_instance", name=name)

    @scheduler_method
    def list_server_snapshots(self, context: RequestContext, server: str) -> list[dict[str, Any]]:
        record = self._placed(server, context)
        return self.compute.list_instance_snapshots(record["host"], record["uuid"])

    @scheduler_method
    def server_diagnostics(self, context: RequestContext, server: str) -> dict[str, Any]:
        record = self._placed(server, context)
        return self.compute.get_diagnostics(record["host"], record["uuid"])

    def _placed(self, server: str, context: RequestContext) -> dict[str, Any]:
        """The record of a server (as ``context`` sees it) that has a host to ask."""
        record = self.store.get_instance(server, context=context)
        if not record["host"]:
            raise exception.InstanceStateConflict(
                instance=server, state=record["vm_state"], reason="it never reached a host"
            )
        return record

    @scheduler_method
    def server_console_log(
        self, context: RequestContext, server: str, lines: int | None = None
    ) -> str:
        record = self._placed(server, context)
        return self.compute.get_console_output(record["host"], record["uuid"], lines)

    # --- hosts -----------------------------------------------------------------

    @scheduler_method
    def set_host_enabled(
        self, ctxt: dict, host: str, enabled: bool, reason: str | None = None
    ) -> dict[str, Any]:
        return self.enable_host(host, enabled, reason, automatic=False)

    def enable_host(
        self, host: str, enabled: bool, reason: str | None, automatic: bool
    ) -> dict[str, Any]:
        """Enable or disable ``host``: by an operator, or ``automatic`` from its agent."""
        record = self.store.set_host_enabled(host, enabled, reason, automatic, self._down_after)
        self.host_view.invalidate()
        LOG.info(
            "Host %s: enabled=%s (%s)", host, record["enabled"], record["disabled_reason"] or "-"
        )
        return record

    @scheduler_method
    def list_hosts(self, context: RequestContext) -> list:
        return self.store.list_hosts(self._down_after)

    @scheduler_method
    def show_host(self, context: RequestContext, host: str) -> dict[str, Any]:
        record = self.aggregates.annotate([self.store.get_host(host, self._down_after)])[0]
        record["aggregate_properties"] = {
            k: sorted(v) for k, v in record["aggregate_properties"].items()
        }
        servers = self.store.list_instances(host=host)
        record["instances"] = [i["uuid"] for i in servers]
        # NOTE: what each server claims here (ERROR servers claim nothing).
        record["allocations"] = [
            {k: i[k] for k in ("uuid", "name", "vcpus", "memory_mb", "root_gb", "vm_state")}
            for i in servers
            if i["vm_state"] != "error"
        ]
        return record

    # --- flavors ---------------------------------------------------------------

    @scheduler_method
    def list_flavors(self, context: RequestContext) -> list:
        return self.store.list_flavors()

    @scheduler_method
    def create_flavor(
        self,
        context: RequestContext,
        name: str,
        vcpus: int,
        memory_mb: int,
        root_gb: int,
        extra_specs: dict[str, str] | None = None,
    ) -> dict:
        return self.store.create_flavor(name, vcpus, memory_mb, root_gb, extra_specs)

    @scheduler_method
    def delete_flavor(self, context: RequestContext, flavor: str) -> None:
        self.store.delete_flavor(flavor)

    # --- images ----------------------------------------------------------------

    @scheduler_method
    def import_image(
        self,
        context: RequestContext,
        uuid: str,
        name: str,
        file: str,
        kernel: str | None = None,
        initrd: str | None = None,
        cmdline: str | None = None,
        properties: dict[str, str] | None = None,
        disk_format: str | None = None,
    ) -> dict[str, Any]:
        """Import an image from the import directory (``[image] import_path``).

        ``file``, ``kernel`` and ``initrd`` are names relative to that
        directory; ``disk_format`` the format the caller says the disk has.
        """
        # NOTE: checked before the files are copied (create_image checks again).
        guest_properties.check_image(properties, cmdline)
        if (kernel is None) != (initrd is None):
            raise exception.InvalidImage(image=name, reason="--kernel and --initrd go together")
        if cmdline is not None and kernel is None:
            raise exception.InvalidImage(image=name, reason="--cmdline needs --kernel")
        try:
            existing = self.store.get_image(uuid)
        except exception.ImageNotFound:
            existing = None
        if existing is not None:
            return existing  # a repeated import changes nothing
        if self.store.find_image_by_name(name, project=None) is not None:  # public names
            raise exception.DuplicateName(what="Image", name=name)
        fields = self.images.import_files(uuid, name, file, kernel, initrd, disk_format)
        try:
            return self.store.create_image(
                uuid=uuid, name=name, cmdline=cmdline, properties=properties or {}, **fields
            )
        except Exception:
            self.images.remove(uuid)
            raise

    @scheduler_method
    def create_image_from_server(
        self, context: RequestContext, uuid: str, name: str, server: str
    ) -> dict:
        """An image (template) made of a stopped server's root disk, flattened;
        it belongs to the server's project."""
        try:
            existing = self.store.get_image(uuid)
        except exception.ImageNotFound:
            pass
        else:
            scope.repeated(context, existing["project"], uuid)
            return existing  # a repeated request changes nothing
        record = self.store.begin_task(server, frozenset({"stopped"}), "imaging", context)
        try:
            # NOTE: names are unique within the image's project only (the
            # server's): another project's image of that name is no clash.
            if self.store.find_image_by_name(name, record["project"]) is not None:
                raise exception.DuplicateName(what="Image", name=name)
            source = self.store.get_image(record["image"])
            work = self.images.begin_export(uuid)
            try:
                self.compute.export_root_disk(record["host"], record["uuid"], uuid)
                fields = self.images.finish_export(uuid, work, source)
            except BaseException:
                self.images.abandon(work)
                raise
            return self.store.create_image(
                uuid=uuid,
                name=name,
                cmdline=source["cmdline"],
                properties=source["properties"],
                project=record["project"],
                **fields,
            )
        finally:
            self.store.update_instance(record["uuid"], task_state=None)

    @scheduler_method
    def list_images(self, context: RequestContext) -> list:
        """The public images and the caller's project's (an admin's: all)."""
        return self.store.list_images(project=scope.list_project(context))

    @scheduler_method
    def show_image(self, context: RequestContext, image: str) -> dict[str, Any]:
        return self.store.get_image(image, context)

    @scheduler_method
    def delete_image(self, context: RequestContext, image: str) -> dict[str, Any]:
        gone = self.store.delete_image(image, context)
        self.images.remove(gone["uuid"])
        return gone

    def notify_failure(self, event_type: str, uuid: str) -> None:
        try:
            self.notifier.error(event_type, self.store.get_instance(uuid, include_deleted=True))
        except exception.InstanceNotFound:
            pass


def ensure_state_dirs(conf: cfg.ConfigOpts) -> None:
    """Create the scheduler's directories, missing ones only.

    The state and image store directories are 0711: QEMU (another user)
    must traverse them to the kernels that libvirt labels for it, but only
    the services list or read them. The import directory is the
    operator's, 0700 when made here.
    """
    for path, mode in (
        (conf.state_path, 0o711),
        (conf.image.store_path, 0o711),
        (conf.image.import_path, 0o700),
    ):
        if not os.path.isdir(path):
            os.makedirs(path, mode=mode, exist_ok=True)
            os.chmod(path, mode)
    # NOTE: the store is ours alone: one left 0755 by an older release is closed too.
    os.chmod(conf.image.store_path, 0o711)
