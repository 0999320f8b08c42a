"""The server methods of the scheduler API 1.0: create, list, show, delete,
actions, snapshots, diagnostics and the console log.

A create goes to the build path (``build.py``); every other method checks
the server's state in the store and asks its host's agent.
"""

from __future__ import annotations

from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver import exception, notifications, states
from compute_driver.rpc import compute_api
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler import scope
from compute_driver.scheduler.build import BuildPath
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.networks import NetworkManager
from compute_driver.scheduler.scope import scheduler_method
from compute_driver.scheduler.store import Store


class ServerEndpoint:
    """Serves the server methods of topic ``scheduler``."""

    target = messaging.Target(version="1.0")

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        store: Store,
        catalog: Catalog,
        compute: compute_api.ComputeAPI,
        build: BuildPath,
        networks: NetworkManager,
        notifier: notifications.Notifier,
    ) -> None:
        self.conf = conf
        self.store = store
        self.catalog = catalog
        self.compute = compute
        self.build = build
        self.networks = networks
        self.notifier = notifier

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
        return self.build.create(
            context,
            uuid=uuid,
            name=name,
            flavor=flavor,
            image=image,
            project=project,
            host=host,
            user_data=user_data,
            root_clone=root_clone,
            root_backend=root_backend,
            boot_volume=boot_volume,
            networks=networks,
            availability_zone=availability_zone,
            group=group,
        )

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
                image = self.catalog.get_image(record["image"])
                self.compute.reboot_instance(
                    host, uuid, hard=True, instance=self.build.build_payload(uuid, image)
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
