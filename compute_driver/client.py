"""The Python client an upstream API service (or ``computectl``) embeds.

Every method is one scheduler RPC with a timeout; errors arrive as the
typed exceptions of :mod:`compute_driver.exception`. Creates carry a UUID
chosen here, so retrying a create after a timeout never makes a second
server.

Every call carries who makes it (``rpc/context.py``): the project it acts
for and whether it is an admin. A client of a project sees that project
only (names resolve in it; other projects' objects are not found); an
upstream API serving many projects makes one client and a
:meth:`Client.for_project` view per request.
"""

from __future__ import annotations

import base64
import copy
import os
import stat
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from compute_driver import exception
from compute_driver.rpc.context import RequestContext
from compute_driver.rpc.scheduler_api import SchedulerAPI
from compute_driver.states import STABLE_STATES

ProgressCallback = Callable[[dict[str, Any], float], None]

#: Largest user data a server may have (the config drive's bound; the RPC
#: schema allows its base64 form and no more).
MAX_USER_DATA_BYTES = 64 * 1024


def read_user_data(path: str) -> bytes:
    """The user data in file ``path``, read no further than the limit.

    A FIFO, device or directory is refused before it is read (``/dev/zero``
    would never end), and a file larger than :data:`MAX_USER_DATA_BYTES` is
    refused after reading one byte more than that.

    :raises Invalid: not a readable regular file, or too large.
    """
    try:
        # NOTE: O_NONBLOCK: opening a FIFO for reading would wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise exception.Invalid(
            reason="cannot read --user-data %s: %s" % (path, exc.strerror)
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise exception.Invalid(reason="--user-data %s is not a regular file" % path)
        data = b""
        while len(data) <= MAX_USER_DATA_BYTES:
            chunk = os.read(fd, MAX_USER_DATA_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    _check_user_data_size(data)
    return data


def _check_user_data_size(data: bytes) -> None:
    if len(data) > MAX_USER_DATA_BYTES:
        raise exception.Invalid(
            reason="user data is larger than %d bytes (64 KiB), the limit" % MAX_USER_DATA_BYTES
        )


class Client:
    """Servers, hosts, flavors and images, through the scheduler."""

    def __init__(
        self,
        conf: cfg.ConfigOpts = cfg.CONF,
        timeout: int | None = None,
        *,
        project: str | None = None,
        user: str | None = None,
        admin: bool = False,
    ) -> None:
        """:param project: the project the calls act for (its objects only).
        :param user: who, for the scheduler's logs.
        :param admin: an operator: every project, hosts, flavors, aggregates
            and public images. NOTE: neither project nor admin: the scheduler
            refuses every call but ``ping``.
        """
        self._api = SchedulerAPI(
            conf, timeout=timeout, context=RequestContext(project=project, user=user, admin=admin)
        )

    @property
    def context(self) -> RequestContext:
        """Who this client's calls come from."""
        return self._api.identity

    def for_project(self, project: str, user: str | None = None) -> Client:
        """A view of this client that acts for ``project`` (not admin), on the
        same connection: one per request of an upstream API."""
        view = copy.copy(self)
        view._api = copy.copy(self._api)
        view._api.identity = RequestContext(project=project, user=user)
        return view

    def ping(self) -> dict[str, str]:
        return self._api.ping()

    # --- servers ---------------------------------------------------------------

    def create_server(
        self,
        name: str,
        flavor: str,
        image: str,
        project: str | None = None,
        host: str | None = None,
        user_data: bytes | None = None,
        uuid: str | None = None,
        full_clone: bool = False,
        root_backend: str | None = None,
        boot_volume: str | None = None,
        networks: list[str] | None = None,
        availability_zone: str | None = None,
        group: str | None = None,
    ) -> dict[str, Any]:
        """Create a server; returns its record (vm_state ``building``).

        It belongs to this client's project; ``project`` may name that one
        again, or (an admin's client) any project.

        ``networks`` gives it one port per network, in order (eth0, eth1...),
        each with a MAC and a fixed IP handed to the guest on its config drive.

        ``full_clone`` makes the root disk an independent copy of the image
        instead of a linked clone; ``root_backend`` puts it on that storage
        backend; ``boot_volume`` boots from that (available) volume instead.

        :raises NoValidHost: no host can take it (the reason says why per host).
        """
        if user_data:
            _check_user_data_size(user_data)
        encoded = base64.b64encode(user_data).decode("ascii") if user_data else None
        return self._api.create_server(
            uuid=uuid or str(uuidlib.uuid4()),
            name=name,
            flavor=flavor,
            image=image,
            project=project,
            host=host,
            user_data=encoded,
            root_clone="full" if full_clone else None,
            root_backend=root_backend,
            boot_volume=boot_volume,
            networks=networks or None,
            availability_zone=availability_zone,
            group=group,
        )

    def create_servers(self, name: str, count: int, **kwargs: Any) -> list[dict[str, Any]]:
        """Create ``count`` servers named ``NAME-1`` ... ``NAME-N`` (same options).

        Each carries its own UUID, so a retry after a timeout never doubles
        one; a failure (say, no valid host for the seventh) stops the
        series and is raised after the records of those made so far are
        returned in the error's ``created`` attribute.
        """
        if count < 1:
            raise exception.Invalid(reason="--count must be at least 1, not %d" % count)
        made: list[dict[str, Any]] = []
        for index in range(1, count + 1):
            try:
                made.append(self.create_server("%s-%d" % (name, index), **kwargs))
            except exception.ComputeDriverError as exc:
                exc.created = made  # type: ignore[attr-defined]
                raise
        return made

    def list_servers(
        self, project: str | None = None, host: str | None = None, all_projects: bool = False
    ) -> list[dict[str, Any]]:
        """Servers of this client's project; an admin's: ``project``'s, or
        every project's (``all_projects``, or an admin of no project)."""
        return self._api.list_servers(project=project, host=host, all_projects=all_projects or None)

    def show_server(self, server: str) -> dict[str, Any]:
        return self._api.show_server(server=server)

    def delete_server(self, server: str) -> dict[str, Any]:
        return self._api.delete_server(server=server)

    def server_action(self, server: str, action: str) -> dict[str, Any]:
        """Start ``action`` (stop, start, reboot, hard-reboot, pause, unpause,
        suspend, resume); returns the record with its task in flight.

        :raises InstanceStateConflict: another task is in flight, or the
            server's state does not allow the action.
        """
        return self._api.server_action(server=server, action=action)

    def wait_for_action(
        self,
        server: str,
        action: str,
        timeout: float = 300,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Wait for the task of an action to end.

        :raises ActionFailed: the agent reported that the action failed.
        """
        record = self.wait_for_server(server, timeout=timeout, progress=progress)
        if record["fault"]:
            raise exception.ActionFailed(
                action=action, instance=record["name"], reason=record["fault"]
            )
        return record

    def create_snapshot(
        self,
        server: str,
        name: str,
        kind: str = "internal",
        quiesce: bool = False,
        description: str = "",
    ) -> dict[str, Any]:
        """Start a snapshot of ``server``; wait with :meth:`wait_for_action`."""
        return self._api.create_server_snapshot(
            server=server,
            name=name,
            kind=kind,
            quiesce=quiesce,
            description=description,
        )

    def list_snapshots(self, server: str) -> list[dict[str, Any]]:
        return self._api.list_server_snapshots(server=server)

    def revert_snapshot(self, server: str, name: str) -> dict[str, Any]:
        return self._api.revert_server_snapshot(server=server, name=name)

    def delete_snapshot(self, server: str, name: str) -> dict[str, Any]:
        return self._api.delete_server_snapshot(server=server, name=name)

    def diagnostics(self, server: str) -> dict[str, Any]:
        """CPU, memory, vCPU, disk and NIC counters of a server, from its host."""
        return self._api.server_diagnostics(server=server)

    def console_log(self, server: str, lines: int | None = None) -> str:
        return self._api.server_console_log(server=server, lines=lines)

    def wait_for_server(
        self,
        server: str,
        timeout: float = 300,
        interval: float = 0.5,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Poll until the server reaches a stable state with no task in flight.

        :raises BuildFailed: it ended in ERROR.
        :raises MessagingTimeout: still not settled after ``timeout`` seconds.
        """
        start = time.monotonic()
        while True:
            record = self.show_server(server)
            elapsed = time.monotonic() - start
            if progress:
                progress(record, elapsed)
            if record["vm_state"] in STABLE_STATES and not record["task_state"]:
                if record["vm_state"] == "error":
                    raise exception.BuildFailed(instance=record["name"], reason=record["fault"])
                return record
            if elapsed > timeout:
                raise exception.MessagingTimeout(
                    service="server %s to settle" % server, timeout=timeout
                )
            time.sleep(interval)

    def wait_for_delete(
        self,
        server: str,
        timeout: float = 120,
        interval: float = 0.5,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Poll until the server is gone."""
        start = time.monotonic()
        while True:
            try:
                record = self.show_server(server)
            except exception.InstanceNotFound:
                return
            elapsed = time.monotonic() - start
            if progress:
                progress(record, elapsed)
            if record["vm_state"] == "error" and not record["task_state"]:
                raise exception.DeleteFailed(instance=record["name"], reason=record["fault"])
            if elapsed > timeout:
                raise exception.MessagingTimeout(
                    service="server %s to go" % server, timeout=timeout
                )
            time.sleep(interval)

    # --- hosts, flavors, images ----------------------------------------------------

    def list_hosts(self) -> list[dict[str, Any]]:
        return self._api.list_hosts()

    def show_host(self, host: str) -> dict[str, Any]:
        return self._api.show_host(host=host)

    def set_host_enabled(
        self, host: str, enabled: bool, reason: str | None = None
    ) -> dict[str, Any]:
        """Let the scheduler place servers on ``host`` again, or stop it doing so."""
        return self._api.set_host_enabled(host=host, enabled=enabled, reason=reason)

    def list_flavors(self) -> list[dict[str, Any]]:
        return self._api.list_flavors()

    def create_flavor(
        self,
        name: str,
        vcpus: int,
        memory_mb: int,
        root_gb: int,
        extra_specs: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a flavor; ``extra_specs`` shape the guest (the table is in
        ``compute_driver/guest_properties.py``)."""
        return self._api.create_flavor(
            name=name,
            vcpus=vcpus,
            memory_mb=memory_mb,
            root_gb=root_gb,
            extra_specs=extra_specs or None,
        )

    def delete_flavor(self, name: str) -> None:
        self._api.delete_flavor(flavor=name)

    def import_image(
        self,
        name: str,
        file: str,
        kernel: str | None = None,
        initrd: str | None = None,
        cmdline: str | None = None,
        uuid: str | None = None,
        properties: dict[str, str] | None = None,
        disk_format: str | None = None,
    ) -> dict[str, Any]:
        """Register an image from the scheduler's import directory.

        ``file``, ``kernel`` and ``initrd`` name files *relative to* the
        scheduler's ``[image] import_path`` (an operator puts them there);
        absolute names, ``..`` and symlinks are refused. The scheduler
        probes the disk and converts vmdk, vdi, vhdx, vpc and qed to qcow2.
        ``disk_format`` says what the disk is (by default its extension,
        when that names a format): content that disagrees is refused.
        ``properties`` shape the guests booted from it (``hw_disk_bus`` ...).

        :raises InvalidImage: refused, with the reason; nothing is stored.
        """
        return self._api.import_image(
            uuid=uuid or str(uuidlib.uuid4()),
            name=name,
            file=file,
            kernel=kernel,
            initrd=initrd,
            cmdline=cmdline,
            properties=properties or None,
            disk_format=disk_format,
        )

    def create_image_from_server(
        self, name: str, server: str, uuid: str | None = None
    ) -> dict[str, Any]:
        """Make an image (template) of a stopped server's root disk."""
        return self._api.create_image_from_server(
            uuid=uuid or str(uuidlib.uuid4()), name=name, server=server
        )

    def list_images(self) -> list[dict[str, Any]]:
        return self._api.list_images()

    def show_image(self, image: str) -> dict[str, Any]:
        return self._api.show_image(image=image)

    def delete_image(self, image: str) -> dict[str, Any]:
        return self._api.delete_image(image=image)

    # --- volumes ---------------------------------------------------------------

    def create_volume(
        self,
        name: str,
        size_gb: int,
        backend: str,
        project: str | None = None,
        image: str | None = None,
        host: str | None = None,
        uuid: str | None = None,
    ) -> dict[str, Any]:
        """Create a volume (empty, or holding ``image``); returns it ``available``.

        :raises NoValidHost: no up host offers ``backend``.
        :raises StorageError: the backend could not make it (it ends ``error``).
        """
        return self._api.create_volume(
            uuid=uuid or str(uuidlib.uuid4()),
            name=name,
            size_gb=size_gb,
            backend=backend,
            project=project,
            image=image,
            host=host,
        )

    def list_volumes(
        self, project: str | None = None, all_projects: bool = False
    ) -> list[dict[str, Any]]:
        """Volumes of this client's project (an admin's: as list_servers)."""
        return self._api.list_volumes(project=project, all_projects=all_projects or None)

    def show_volume(self, volume: str) -> dict[str, Any]:
        return self._api.show_volume(volume=volume)

    def delete_volume(self, volume: str) -> dict[str, Any]:
        """Delete a volume that is not attached."""
        return self._api.delete_volume(volume=volume)

    def attach_volume(self, server: str, volume: str) -> dict[str, Any]:
        """Attach a volume of the server's project; returns it ``in-use`` with its target_dev."""
        return self._api.attach_volume(server=server, volume=volume)

    def detach_volume(self, server: str, volume: str) -> dict[str, Any]:
        """Detach a volume once the guest released it; returns it ``available``."""
        return self._api.detach_volume(server=server, volume=volume)

    def resize_volume(self, volume: str, size_gb: int) -> dict[str, Any]:
        """Grow a volume (a running guest sees the new size)."""
        return self._api.resize_volume(volume=volume, size_gb=size_gb)

    def volume_snapshot(self, volume: str, action: str, name: str | None = None) -> Any:
        """create, revert or delete snapshot ``name`` of a volume, or ``list`` them."""
        return self._api.volume_snapshot(volume=volume, action=action, name=name)

    # --- networks --------------------------------------------------------------

    def create_network(
        self,
        name: str,
        network_type: str,
        cidr: str,
        project: str | None = None,
        segment: int | None = None,
        physnet: str | None = None,
        gateway: str | None = None,
        mtu: int | None = None,
        uuid: str | None = None,
    ) -> dict[str, Any]:
        """Create a tenant network; the segment (VNI, VLAN ID) is allocated unless given.

        :raises SegmentInUse: the segment is taken.
        :raises InvalidNetwork: out-of-range segment, bad subnet, gateway or MTU.
        """
        return self._api.create_network(
            uuid=uuid or str(uuidlib.uuid4()),
            name=name,
            type=network_type,
            cidr=cidr,
            project=project,
            segment=segment,
            physnet=physnet,
            gateway=gateway,
            mtu=mtu,
        )

    def list_networks(
        self, project: str | None = None, all_projects: bool = False
    ) -> list[dict[str, Any]]:
        """Networks of this client's project (an admin's: as list_servers)."""
        return self._api.list_networks(project=project, all_projects=all_projects or None)

    def show_network(self, network: str) -> dict[str, Any]:
        """A network, with the hosts that have ports on it."""
        return self._api.show_network(network=network)

    def delete_network(self, network: str) -> dict[str, Any]:
        """Delete a network that has no ports."""
        return self._api.delete_network(network=network)

    def attach_interface(self, server: str, network: str) -> dict[str, Any]:
        """Give a server one more port on ``network`` (hot-plugged if it runs)."""
        return self._api.attach_interface(server=server, network=network)

    def detach_interface(self, server: str, port: str) -> dict[str, Any]:
        """Remove a port of a server once the guest released its NIC."""
        return self._api.detach_interface(server=server, port=port)

    def list_interfaces(self, server: str) -> list[dict[str, Any]]:
        """A server's ports, in device order (eth0 first)."""
        return self._api.list_interfaces(server=server)

    # --- aggregates, zones, server groups ------------------------------------------

    def create_aggregate(self, name: str, availability_zone: str | None = None) -> dict[str, Any]:
        return self._api.create_aggregate(name=name, availability_zone=availability_zone)

    def set_aggregate(
        self,
        aggregate: str,
        availability_zone: str | None = None,
        properties: dict[str, str] | None = None,
        no_availability_zone: bool = False,
    ) -> dict[str, Any]:
        """Set (or remove) an aggregate's zone, and properties ('' value removes one)."""
        return self._api.set_aggregate(
            aggregate=aggregate,
            availability_zone=availability_zone,
            no_availability_zone=no_availability_zone or None,
            properties=properties or None,
        )

    def add_aggregate_host(self, aggregate: str, host: str) -> dict[str, Any]:
        return self._api.add_aggregate_host(aggregate=aggregate, host=host)

    def remove_aggregate_host(self, aggregate: str, host: str) -> dict[str, Any]:
        return self._api.remove_aggregate_host(aggregate=aggregate, host=host)

    def list_aggregates(self) -> list[dict[str, Any]]:
        return self._api.list_aggregates()

    def show_aggregate(self, aggregate: str) -> dict[str, Any]:
        return self._api.show_aggregate(aggregate=aggregate)

    def delete_aggregate(self, aggregate: str) -> dict[str, Any]:
        return self._api.delete_aggregate(aggregate=aggregate)

    def create_server_group(
        self, name: str, policy: str, project: str | None = None, uuid: str | None = None
    ) -> dict[str, Any]:
        return self._api.create_server_group(
            uuid=uuid or str(uuidlib.uuid4()),
            name=name,
            policy=policy,
            project=project,
        )

    def list_server_groups(
        self, project: str | None = None, all_projects: bool = False
    ) -> list[dict[str, Any]]:
        """Server groups of this client's project (an admin's: as list_servers)."""
        return self._api.list_server_groups(project=project, all_projects=all_projects or None)

    def show_server_group(self, group: str) -> dict[str, Any]:
        return self._api.show_server_group(group=group)

    def delete_server_group(self, group: str) -> dict[str, Any]:
        return self._api.delete_server_group(group=group)
