"""The build path: a new server's way from its record to an agent.

create -> claim -> cast, and the reschedule of a build that failed on its
host: placement (filters and weighers), the claim on the chosen host, the
build payload and its cast. The RPC method ``create_server``
(``servers.py``) and the agent reports (``reports.py``) hand over to it.

One failure exit: whatever fails once ``instance.create.start`` is sent (a
boot volume or a port that cannot be had, a placement error, no valid
host, an agent out of reach, a build that failed on every host it was
given) leaves through :meth:`BuildPath._fail`, which marks the server ERROR
with the reason and sends ``instance.create.error``, once. A listener
waiting for ``instance.create.end`` or ``instance.create.error`` hears one
of them. A create refused before its record is stored (an unknown flavor,
image, network, volume or group) sends nothing: there is no server.
"""

from __future__ import annotations

import logging
from typing import Any

from oslo_config import cfg

from compute_driver import exception, notifications
from compute_driver.objects import decode_user_data
from compute_driver.rpc import compute_api
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler import placement, records, scope
from compute_driver.scheduler.aggregates import AggregateManager
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.host_view import HostView
from compute_driver.scheduler.networks import NetworkManager
from compute_driver.scheduler.store import Store
from compute_driver.scheduler.volumes import VolumeManager

LOG = logging.getLogger(__name__)


class _Failed(Exception):
    """A step of the build failed: ``fault`` for the server's record, ``error`` for the caller."""

    def __init__(self, fault: str, error: BaseException) -> None:
        super().__init__(fault)
        self.fault = fault
        self.error = error


def _fault(exc: Exception) -> str:
    """What the record of a server whose build failed with ``exc`` says."""
    if isinstance(exc, _Failed):
        return exc.fault
    if isinstance(exc, exception.ComputeDriverError):
        return exc.message
    return "build failed: %s" % exc


class BuildPath:
    """Places, claims for and casts the builds of new servers, and reschedules failed ones."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        store: Store,
        catalog: Catalog,
        compute: compute_api.ComputeAPI,
        volumes: VolumeManager,
        networks: NetworkManager,
        aggregates: AggregateManager,
        host_view: HostView,
        notifier: notifications.Notifier,
    ) -> None:
        self.conf = conf
        self.store = store
        self.catalog = catalog
        self.compute = compute
        self.volumes = volumes
        self.networks = networks
        self.aggregates = aggregates
        self.host_view = host_view
        self.notifier = notifier
        self._placement_cache: placement.Placement | None = None

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

    def create(
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
        """Store a new server and send it on its way (the body of ``create_server``).

        Checks what it can before anything is stored; a repeated create
        (same UUID) returns the existing record.
        """
        project = scope.owner(context, project, "create_server")
        decode_user_data(user_data)  # InvalidPayload before anything is stored
        if availability_zone is not None:
            self.aggregates.check_zone(availability_zone)
        group_rec = self.aggregates.group_for(group, project, context) if group else None
        flavor_rec, image_rec = self.catalog.get_flavor_and_image(flavor, image, context)
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
            placed = self._schedule(
                record, image_rec, user_data, root_clone, boot=boot, ports=ports, forced_host=host
            )
        except Exception as exc:
            # NOTE: the record exists already: never leave it scheduling.
            self._fail(record, _fault(exc))
            if isinstance(exc, _Failed):
                raise exc.error from exc.error.__cause__
            raise
        self.networks.fan_out(sorted({p["network"]["id"] for p in ports}))
        return placed

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

        The caller sends the failure (:meth:`_fail`) and the topology fan-out.

        :raises _Failed: no valid host (``NoValidHost``), the chosen agent
            cannot be reached (``BuildFailed``) or placement failed.
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
            raise _Failed(
                "No valid host: %s" % why,
                exception.NoValidHost(instance=name, reason=why, filters=selection.report()),
            )
        LOG.info("Server %s (%s) placed on %s", name, uuid, chosen)
        # NOTE: built from the records in hand: no further reads on the hot path.
        record = dict(record, host=chosen, task_state="spawning")
        try:
            payload = records.server_spec(
                record,
                image_rec,
                user_data,
                root_clone=root_clone,
                root_backend=root_backend,
                boot_volume=boot,
            ).to_wire()
            if ports:
                payload["ports"] = ports
                self.networks.bind(uuid, chosen)
            self.compute.build_instance(chosen, payload)
        except Exception as exc:
            error = exception.BuildFailed(
                instance=name, reason="cannot reach %s: %s" % (chosen, exc)
            )
            error.__cause__ = exc
            raise _Failed("cannot reach the agent on %s: %s" % (chosen, exc), error) from exc
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
            raise _Failed("placement failed: %s" % exc, exc) from exc
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

    def build_failed(self, uuid: str, host: str, fault: str) -> bool:
        """An agent says the build of ``uuid`` failed on ``host``: record the
        attempt and place the server elsewhere, or, out of attempts
        (``[scheduler] max_attempts``), give up through the failure exit.

        :returns: False when the server was not building on ``host`` (deleted,
            moved on, or an action failed rather than a build): nothing done.
        """
        requeued = self.store.requeue_failed_build(
            uuid, host, fault, self.conf.scheduler.max_attempts
        )
        # NOTE: the host's claim went back and its failed-builds count up.
        self.host_view.invalidate()
        if requeued is None:
            return False
        record, again = requeued
        if again:
            self.reschedule(record)
        else:
            self._fail(record, record["fault"])
        return True

    def reschedule(self, record: dict[str, Any]) -> None:
        """Place a server whose build failed on another host (its attempts are skipped)."""
        uuid = record["uuid"]
        try:
            image_rec = self.catalog.get_image(record["image"])
            boot = self.volumes.boot_volume_of(uuid)
            ports = self.networks.agent_ports(uuid)
            self._schedule(
                record,
                image_rec,
                self.store.get_instance_user_data(uuid),
                record.get("root_clone") or "linked",
                boot=boot,
                ports=ports,
            )
        except Exception as exc:
            self._fail(record, _fault(exc))
            LOG.warning("Server %s could not be rescheduled: %s", uuid, _fault(exc))
            return
        LOG.info("Server %s rescheduled after %d failed build(s)", uuid, len(record["attempts"]))
        self.networks.fan_out(sorted({p["network"]["id"] for p in ports}))

    def _fail(self, record: dict[str, Any], fault: str) -> None:
        """The build path's one failure exit: the server goes to ERROR with
        ``fault`` (its claim released) and ``instance.create.error`` is sent.

        Never raises: the caller is already handling a failure.
        """
        uuid = record["uuid"]
        try:
            self.store.fail_instance(uuid, fault)
            record = self.store.get_instance(uuid, include_deleted=True)
        except Exception:  # noqa: BLE001 - the database may be what failed
            LOG.exception("Server %s: could not record its failure: %s", uuid, fault)
            # NOTE: the listener still hears the failure, from the record in hand.
            record = dict(record, vm_state="error", task_state=None, fault=fault)
        self.notifier.error("instance.create.error", record)

    def build_payload(self, uuid: str, image: dict[str, Any]) -> dict[str, Any]:
        """The build payload of an existing server, read from the store, with
        its root backend, boot volume and attached volumes."""
        instance = self.store.get_instance(uuid)
        attached = self.volumes.attached(uuid)
        payload = records.server_spec(
            instance,
            image,
            self.store.get_instance_user_data(uuid),
            root_clone=instance["root_clone"],
            root_backend=instance["root_backend"],
            boot_volume=next((v for v in attached if v["boot"]), None),
            volumes=[v for v in attached if not v["boot"] and v["target_dev"]],
        ).to_wire()
        ports = self.networks.agent_ports(uuid)
        if ports:
            payload["ports"] = ports
        return payload
