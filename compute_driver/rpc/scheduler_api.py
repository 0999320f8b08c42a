"""Client side of the scheduler API (topic ``scheduler``).

Version history:
  1.0 - servers (create, list, show, delete, actions, console log), hosts, flavors,
        images. Issue 12: the agent reports (report_host, instance_update,
        set_host_enabled automatic, instance_power_changed, instance_deleted,
        host_networks, host_instances) moved to their own topic
        (compute_driver/rpc/agent_reports_api.py); this topic no longer answers
        them, and set_host_enabled no longer takes ``automatic``.
        Issue 12: every call may carry ``signature``, made with the client
        key over the method, payload and context (``[client] key``,
        compute_driver/rpc/report_signing.py); a scheduler with
        ``[agent_reports] secret`` refuses a call without it.
        Issue 14: one client method per scheduler method, each checking its
        payload against the schema before sending (nothing changes on the wire).
"""

from __future__ import annotations

from typing import Any, cast

from oslo_config import cfg

from compute_driver.rpc import report_signing, schemas
from compute_driver.rpc.client import RPCClientBase, present
from compute_driver.rpc.context import RequestContext

TOPIC = "scheduler"


class SchedulerAPI(RPCClientBase):
    """Every public scheduler method, one Python method each, each checking
    its payload against ``schemas.SCHEDULER_METHODS`` before it is sent
    (:class:`~compute_driver.exception.InvalidPayload`, nothing sent).

    Calls return plain dicts (the stable shapes documented in
    docs/rpc-api.md) or raise the typed errors of compute_driver.exception.
    An optional argument left at None is left out of the message.
    """

    TOPIC = TOPIC
    API_VERSION = "1.0"
    CAP_OPTION = "scheduler"
    METHODS = schemas.SCHEDULER_METHODS
    CASTS = schemas.SCHEDULER_CASTS

    def __init__(
        self,
        conf: cfg.ConfigOpts = cfg.CONF,
        timeout: int | None = None,
        context: RequestContext | None = None,
    ) -> None:
        super().__init__(conf, timeout=timeout, context=context)
        #: The client key every call is signed with; None sends them unsigned.
        self._key: str | None = report_signing.configured_client_key(conf)
        self.signer = self._sign_call

    # NOTE: the context is signed too: it says who is an admin, and an
    # agent's credential can put a call into this topic's queue.
    def _sign_call(
        self, method: str, context: dict[str, Any], payload: dict[str, Any], host: str | None
    ) -> dict[str, Any]:
        if self._key is None:
            return payload
        return report_signing.sign_call(self._key, method, context, payload)

    def ping(self) -> dict[str, Any]:
        """Call: the scheduler's name and API version; proves it listens."""
        return cast(dict[str, Any], self._request("ping", {}))

    def create_server(
        self,
        uuid: str,
        name: str,
        flavor: str,
        image: str,
        *,
        project: str | None = None,
        host: str | None = None,
        user_data: str | None = None,
        root_clone: str | None = None,
        root_backend: str | None = None,
        boot_volume: str | None = None,
        networks: list[str] | None = None,
        availability_zone: str | None = None,
        group: str | None = None,
    ) -> dict[str, Any]:
        """Call: create a server (vm_state ``building``); returns its record."""
        return cast(
            dict[str, Any],
            self._request(
                "create_server",
                present(
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
                ),
            ),
        )

    def list_servers(
        self,
        *,
        project: str | None = None,
        host: str | None = None,
        all_projects: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Call: the servers of the caller's project (an admin's: ``project``'s, or all)."""
        return cast(
            list[dict[str, Any]],
            self._request(
                "list_servers", present(project=project, host=host, all_projects=all_projects)
            ),
        )

    def show_server(self, server: str) -> dict[str, Any]:
        """Call: one server's record."""
        return cast(dict[str, Any], self._request("show_server", {"server": server}))

    def delete_server(self, server: str) -> dict[str, Any]:
        """Call: start deleting a server; returns its record."""
        return cast(dict[str, Any], self._request("delete_server", {"server": server}))

    def server_console_log(self, server: str, *, lines: int | None = None) -> str:
        """Call: the last ``lines`` lines of a server's serial console."""
        return cast(str, self._request("server_console_log", present(server=server, lines=lines)))

    def server_action(self, server: str, action: str) -> dict[str, Any]:
        """Call: start ``action`` on a server; returns the record with its task."""
        return cast(
            dict[str, Any], self._request("server_action", {"server": server, "action": action})
        )

    def set_host_enabled(
        self, host: str, enabled: bool, *, reason: str | None = None
    ) -> dict[str, Any]:
        """Call: let the scheduler place servers on ``host``, or stop it doing so."""
        return cast(
            dict[str, Any],
            self._request("set_host_enabled", present(host=host, enabled=enabled, reason=reason)),
        )

    def create_server_snapshot(
        self,
        server: str,
        name: str,
        *,
        kind: str | None = None,
        quiesce: bool | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Call: start a snapshot of a server; returns its record."""
        return cast(
            dict[str, Any],
            self._request(
                "create_server_snapshot",
                present(
                    server=server, name=name, kind=kind, quiesce=quiesce, description=description
                ),
            ),
        )

    def list_server_snapshots(self, server: str) -> list[dict[str, Any]]:
        """Call: a server's snapshots, oldest first."""
        return cast(
            list[dict[str, Any]], self._request("list_server_snapshots", {"server": server})
        )

    def revert_server_snapshot(self, server: str, name: str) -> dict[str, Any]:
        """Call: start reverting a server to a snapshot; returns its record."""
        return cast(
            dict[str, Any],
            self._request("revert_server_snapshot", {"server": server, "name": name}),
        )

    def delete_server_snapshot(self, server: str, name: str) -> dict[str, Any]:
        """Call: start deleting a server's snapshot; returns its record."""
        return cast(
            dict[str, Any],
            self._request("delete_server_snapshot", {"server": server, "name": name}),
        )

    def server_diagnostics(self, server: str) -> dict[str, Any]:
        """Call: CPU, memory, vCPU, disk and NIC counters of a server."""
        return cast(dict[str, Any], self._request("server_diagnostics", {"server": server}))

    def create_volume(
        self,
        uuid: str,
        name: str,
        size_gb: int,
        backend: str,
        *,
        project: str | None = None,
        image: str | None = None,
        host: str | None = None,
    ) -> dict[str, Any]:
        """Call: create a volume (empty, or holding ``image``); returns it."""
        return cast(
            dict[str, Any],
            self._request(
                "create_volume",
                present(
                    uuid=uuid,
                    name=name,
                    size_gb=size_gb,
                    backend=backend,
                    project=project,
                    image=image,
                    host=host,
                ),
            ),
        )

    def list_volumes(
        self, *, project: str | None = None, all_projects: bool | None = None
    ) -> list[dict[str, Any]]:
        """Call: the volumes of the caller's project (an admin's: as list_servers)."""
        return cast(
            list[dict[str, Any]],
            self._request("list_volumes", present(project=project, all_projects=all_projects)),
        )

    def show_volume(self, volume: str) -> dict[str, Any]:
        """Call: one volume."""
        return cast(dict[str, Any], self._request("show_volume", {"volume": volume}))

    def delete_volume(self, volume: str) -> dict[str, Any]:
        """Call: delete a volume that is not attached."""
        return cast(dict[str, Any], self._request("delete_volume", {"volume": volume}))

    def attach_volume(self, server: str, volume: str) -> dict[str, Any]:
        """Call: attach a volume to a server; returns it ``in-use``."""
        return cast(
            dict[str, Any], self._request("attach_volume", {"server": server, "volume": volume})
        )

    def detach_volume(self, server: str, volume: str) -> dict[str, Any]:
        """Call: detach a volume from a server; returns it ``available``."""
        return cast(
            dict[str, Any], self._request("detach_volume", {"server": server, "volume": volume})
        )

    def resize_volume(self, volume: str, size_gb: int) -> dict[str, Any]:
        """Call: grow a volume."""
        return cast(
            dict[str, Any], self._request("resize_volume", {"volume": volume, "size_gb": size_gb})
        )

    def volume_snapshot(self, volume: str, action: str, *, name: str | None = None) -> Any:
        """Call: create, list, revert or delete snapshots of a volume."""
        return self._request("volume_snapshot", present(volume=volume, action=action, name=name))

    def create_network(
        self,
        uuid: str,
        name: str,
        type: str,
        cidr: str,
        *,
        project: str | None = None,
        segment: int | None = None,
        physnet: str | None = None,
        gateway: str | None = None,
        mtu: int | None = None,
    ) -> dict[str, Any]:
        """Call: create a tenant network (its segment allocated unless given)."""
        return cast(
            dict[str, Any],
            self._request(
                "create_network",
                present(
                    uuid=uuid,
                    name=name,
                    type=type,
                    cidr=cidr,
                    project=project,
                    segment=segment,
                    physnet=physnet,
                    gateway=gateway,
                    mtu=mtu,
                ),
            ),
        )

    def list_networks(
        self, *, project: str | None = None, all_projects: bool | None = None
    ) -> list[dict[str, Any]]:
        """Call: the networks of the caller's project (an admin's: as list_servers)."""
        return cast(
            list[dict[str, Any]],
            self._request("list_networks", present(project=project, all_projects=all_projects)),
        )

    def attach_interface(self, server: str, network: str) -> dict[str, Any]:
        """Call: give a server one more port on ``network``."""
        return cast(
            dict[str, Any],
            self._request("attach_interface", {"server": server, "network": network}),
        )

    def detach_interface(self, server: str, port: str) -> dict[str, Any]:
        """Call: remove a port of a server."""
        return cast(
            dict[str, Any], self._request("detach_interface", {"server": server, "port": port})
        )

    def list_interfaces(self, server: str) -> list[dict[str, Any]]:
        """Call: a server's ports, in device order."""
        return cast(list[dict[str, Any]], self._request("list_interfaces", {"server": server}))

    def show_network(self, network: str) -> dict[str, Any]:
        """Call: a network, with the hosts that have ports on it."""
        return cast(dict[str, Any], self._request("show_network", {"network": network}))

    def delete_network(self, network: str) -> dict[str, Any]:
        """Call: delete a network that has no ports."""
        return cast(dict[str, Any], self._request("delete_network", {"network": network}))

    def create_aggregate(
        self, name: str, *, availability_zone: str | None = None
    ) -> dict[str, Any]:
        """Call: create a host aggregate."""
        return cast(
            dict[str, Any],
            self._request(
                "create_aggregate", present(name=name, availability_zone=availability_zone)
            ),
        )

    def set_aggregate(
        self,
        aggregate: str,
        *,
        availability_zone: str | None = None,
        no_availability_zone: bool | None = None,
        properties: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Call: set or remove an aggregate's zone and properties."""
        return cast(
            dict[str, Any],
            self._request(
                "set_aggregate",
                present(
                    aggregate=aggregate,
                    availability_zone=availability_zone,
                    no_availability_zone=no_availability_zone,
                    properties=properties,
                ),
            ),
        )

    def add_aggregate_host(self, aggregate: str, host: str) -> dict[str, Any]:
        """Call: add a host to an aggregate."""
        return cast(
            dict[str, Any],
            self._request("add_aggregate_host", {"aggregate": aggregate, "host": host}),
        )

    def remove_aggregate_host(self, aggregate: str, host: str) -> dict[str, Any]:
        """Call: remove a host from an aggregate."""
        return cast(
            dict[str, Any],
            self._request("remove_aggregate_host", {"aggregate": aggregate, "host": host}),
        )

    def list_aggregates(self) -> list[dict[str, Any]]:
        """Call: every aggregate."""
        return cast(list[dict[str, Any]], self._request("list_aggregates", {}))

    def show_aggregate(self, aggregate: str) -> dict[str, Any]:
        """Call: one aggregate."""
        return cast(dict[str, Any], self._request("show_aggregate", {"aggregate": aggregate}))

    def delete_aggregate(self, aggregate: str) -> dict[str, Any]:
        """Call: delete an aggregate."""
        return cast(dict[str, Any], self._request("delete_aggregate", {"aggregate": aggregate}))

    def create_server_group(
        self, uuid: str, name: str, policy: str, *, project: str | None = None
    ) -> dict[str, Any]:
        """Call: create a server group with a placement policy."""
        return cast(
            dict[str, Any],
            self._request(
                "create_server_group", present(uuid=uuid, name=name, policy=policy, project=project)
            ),
        )

    def list_server_groups(
        self, *, project: str | None = None, all_projects: bool | None = None
    ) -> list[dict[str, Any]]:
        """Call: the server groups of the caller's project (an admin's: as list_servers)."""
        return cast(
            list[dict[str, Any]],
            self._request(
                "list_server_groups", present(project=project, all_projects=all_projects)
            ),
        )

    def show_server_group(self, group: str) -> dict[str, Any]:
        """Call: one server group."""
        return cast(dict[str, Any], self._request("show_server_group", {"group": group}))

    def delete_server_group(self, group: str) -> dict[str, Any]:
        """Call: delete a server group."""
        return cast(dict[str, Any], self._request("delete_server_group", {"group": group}))

    def list_hosts(self) -> list[dict[str, Any]]:
        """Call: every host."""
        return cast(list[dict[str, Any]], self._request("list_hosts", {}))

    def show_host(self, host: str) -> dict[str, Any]:
        """Call: one host."""
        return cast(dict[str, Any], self._request("show_host", {"host": host}))

    def list_flavors(self) -> list[dict[str, Any]]:
        """Call: every flavor."""
        return cast(list[dict[str, Any]], self._request("list_flavors", {}))

    def create_flavor(
        self,
        name: str,
        vcpus: int,
        memory_mb: int,
        root_gb: int,
        *,
        extra_specs: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Call: create a flavor."""
        return cast(
            dict[str, Any],
            self._request(
                "create_flavor",
                present(
                    name=name,
                    vcpus=vcpus,
                    memory_mb=memory_mb,
                    root_gb=root_gb,
                    extra_specs=extra_specs,
                ),
            ),
        )

    def delete_flavor(self, flavor: str) -> None:
        """Call: delete a flavor."""
        self._request("delete_flavor", {"flavor": flavor})

    def import_image(
        self,
        uuid: str,
        name: str,
        file: str,
        *,
        kernel: str | None = None,
        initrd: str | None = None,
        disk_format: str | None = None,
        cmdline: str | None = None,
        properties: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Call: register an image from the scheduler's import directory."""
        return cast(
            dict[str, Any],
            self._request(
                "import_image",
                present(
                    uuid=uuid,
                    name=name,
                    file=file,
                    kernel=kernel,
                    initrd=initrd,
                    disk_format=disk_format,
                    cmdline=cmdline,
                    properties=properties,
                ),
            ),
        )

    def create_image_from_server(self, uuid: str, name: str, server: str) -> dict[str, Any]:
        """Call: make an image of a stopped server's root disk."""
        return cast(
            dict[str, Any],
            self._request(
                "create_image_from_server", {"uuid": uuid, "name": name, "server": server}
            ),
        )

    def list_images(self) -> list[dict[str, Any]]:
        """Call: the images the caller may use."""
        return cast(list[dict[str, Any]], self._request("list_images", {}))

    def show_image(self, image: str) -> dict[str, Any]:
        """Call: one image."""
        return cast(dict[str, Any], self._request("show_image", {"image": image}))

    def delete_image(self, image: str) -> dict[str, Any]:
        """Call: delete an image."""
        return cast(dict[str, Any], self._request("delete_image", {"image": image}))
