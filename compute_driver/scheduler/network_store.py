"""The scheduler's networks and ports: every read and write of their tables.

Uniqueness is the database's job, not a lock's: a segment (``segment_key``),
a MAC and an address per network are unique columns, and an allocation that
loses a race to another scheduler simply tries the next free value.
"""

from __future__ import annotations

import datetime
import ipaddress
import random
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from compute_driver import exception
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler.database import Database, find_by_ref
from compute_driver.scheduler.models import Instance, Network, Port

#: Tries before an allocation gives up (each loses only to a concurrent one).
ALLOCATION_TRIES = 64
#: Locally administered unicast prefix of our MACs.
MAC_PREFIX = "fa:16:3e"


def _iso(value: datetime.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def network_dict(network: Network) -> dict[str, Any]:
    """The public shape of a network."""
    return {
        "uuid": network.uuid,
        "name": network.name,
        "project": network.project,
        "type": network.type,
        "segment": network.segment,
        "physnet": network.physnet,
        "cidr": network.cidr,
        "gateway": network.gateway,
        "mtu": network.mtu,
        "revision": network.revision or 0,
        "created_at": _iso(network.created_at),
    }


def port_dict(port: Port, network: Network) -> dict[str, Any]:
    """The public shape of a port, with its network's wire facts."""
    prefix = ipaddress.ip_network(network.cidr).prefixlen
    return {
        "uuid": port.uuid,
        "network": network.uuid,
        "network_name": network.name,
        "instance": port.instance_uuid,
        "device_index": port.device_index,
        "mac": port.mac,
        "ip": port.ip,
        "address": "%s/%d" % (port.ip, prefix),
        "gateway": network.gateway,
        "host": port.host,
    }


def segment_key(network_type: str, segment: int | None, physnet: str | None) -> str:
    """The unique name of a segment on the wire."""
    if network_type in ("vxlan", "geneve"):
        # NOTE: one VNI space for both: a host may carry both kinds, and a
        # VNI reused across them would be confusing on the wire.
        return "tunnel:%d" % (segment or 0)
    if network_type == "vlan":
        return "vlan:%s:%d" % (physnet, segment or 0)
    return "flat:%s" % physnet


class NetworkStore:
    """Network and port rows in the scheduler database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- networks -------------------------------------------------------------

    def _find(self, session: Any, ref: str, context: RequestContext | None = None) -> Network:
        network = find_by_ref(session, Network, ref, Network.name, "networks", None, context)
        if network is None:
            raise exception.NetworkNotFound(network=ref)
        return network

    def get(self, ref: str, context: RequestContext | None = None) -> dict[str, Any]:
        """The network ``ref`` names, as ``context`` sees it (see scope.py).

        :raises NetworkNotFound: none, or another project's.
        """
        with self.db.session() as session:
            return network_dict(self._find(session, ref, context))

    def list_networks(self, project: str | None = None) -> list[dict[str, Any]]:
        with self.db.session() as session:
            query = select(Network).order_by(Network.created_at)
            if project:
                query = query.where(Network.project == project)
            return [network_dict(n) for n in session.scalars(query)]

    def used_segments(self, prefix: str) -> set[str]:
        with self.db.session() as session:
            keys = session.scalars(
                select(Network.segment_key).where(Network.segment_key.startswith(prefix))
            )
            return set(keys)

    def create(self, **fields: Any) -> dict[str, Any]:
        """Insert a network.

        :raises DuplicateName: the project has a network of that name.
        :raises SegmentInUse: its segment is taken (also by a concurrent create).
        """
        try:
            with self.db.session() as session:
                clash = session.scalar(
                    select(Network.uuid).where(
                        Network.name == fields["name"], Network.project == fields["project"]
                    )
                )
                if clash is not None:
                    raise exception.DuplicateName(what="Network", name=fields["name"])
                network = Network(**fields)
                session.add(network)
                session.flush()
                return network_dict(network)
        except IntegrityError as exc:
            if "segment_key" in str(exc.orig) or "networks.segment_key" in str(exc):
                raise exception.SegmentInUse(
                    type=fields["type"], segment=fields["segment_key"]
                ) from None
            raise

    def delete(self, ref: str, context: RequestContext | None = None) -> dict[str, Any]:
        """Remove a network (as ``context`` sees it) that has no ports.

        :raises InUse: servers still have ports on it.
        """
        with self.db.session() as session:
            network = self._find(session, ref, context)
            used = session.scalar(
                select(func.count()).select_from(Port).where(Port.network_uuid == network.uuid)
            )
            if used:
                raise exception.InUse(
                    what="Network", name=network.name, reason="%d port(s) on it" % used
                )
            gone = network_dict(network)
            session.delete(network)
            return gone

    # --- ports -----------------------------------------------------------------

    def allocate_ports(self, instance_uuid: str, networks: list[str]) -> list[dict[str, Any]]:
        """One port per network (in order) for a server: a unique MAC and the
        lowest free address of each network's subnet.

        :raises NetworkNotFound: a network does not exist.
        :raises NetworkFull: a subnet has no free address.
        """
        ports = []
        for index, ref in enumerate(networks):
            ports.append(self._allocate_one(instance_uuid, ref, index))
        return ports

    def _allocate_one(
        self, instance_uuid: str, ref: str, index: int, limit: int | None = None
    ) -> dict[str, Any]:
        skip: set[str] = set()
        for _ in range(ALLOCATION_TRIES):
            try:
                with self.db.session() as session:
                    network = self._find(session, ref)
                    existing = session.scalar(
                        select(Port).where(
                            Port.instance_uuid == instance_uuid, Port.device_index == index
                        )
                    )
                    if existing is not None:
                        return port_dict(existing, network)  # a repeated create
                    if limit is not None:
                        self._check_limit(session, instance_uuid, limit)
                    used = set(
                        session.scalars(select(Port.ip).where(Port.network_uuid == network.uuid))
                    )
                    ip = _first_free(network, used | skip)
                    port = Port(
                        uuid=_uuid(),
                        network_uuid=network.uuid,
                        instance_uuid=instance_uuid,
                        device_index=index,
                        mac=_random_mac(),
                        ip=ip,
                    )
                    session.add(port)
                    session.flush()
                    _bump(session, [network.uuid])
                    return port_dict(port, network)
            except IntegrityError:
                # NOTE: a concurrent create took this address (or, once in
                # 16 million, this MAC): try the next one.
                continue
        raise exception.NetworkFull(network=ref, reason="too many concurrent allocations")

    @staticmethod
    def _check_limit(session: Any, instance_uuid: str, limit: int) -> None:
        """Refuse a port beyond ``limit``, counted in the transaction that adds it.

        NOTE: the server's row is locked first (PostgreSQL; SQLite has one
        writer at a time), so two attaches cannot both see room for one.
        """
        session.scalar(
            select(Instance.uuid).where(Instance.uuid == instance_uuid).with_for_update()
        )
        count = session.scalar(
            select(func.count()).select_from(Port).where(Port.instance_uuid == instance_uuid)
        )
        if count >= limit:
            raise exception.PortLimitReached(instance=instance_uuid, count=count, limit=limit)

    def allocate_next_port(
        self, instance_uuid: str, network: str, host: str, limit: int | None = None
    ) -> dict[str, Any]:
        """One more port of a server (the next device index), bound to ``host``.

        :param limit: the most ports the server may have.
        :raises PortLimitReached: it has ``limit`` already.
        """
        with self.db.session() as session:
            last = session.scalar(
                select(func.max(Port.device_index)).where(Port.instance_uuid == instance_uuid)
            )
        port = self._allocate_one(
            instance_uuid, network, 0 if last is None else last + 1, limit=limit
        )
        with self.db.session() as session:
            row = session.get(Port, port["uuid"])
            if row is not None:
                row.host = host
                _bump(session, [row.network_uuid])
        return dict(port, host=host)

    def delete_port(self, port_uuid: str) -> None:
        with self.db.session() as session:
            row = session.get(Port, port_uuid)
            if row is not None:
                _bump(session, [row.network_uuid])
                session.delete(row)

    def topology(self, network_uuid: str) -> tuple[dict[str, Any], set[str]]:
        """A network (with its revision) and the hosts with ports on it, read together."""
        with self.db.session() as session:
            network = self._find(session, network_uuid)
            hosts = session.scalars(
                select(Port.host).where(Port.network_uuid == network.uuid, Port.host.is_not(None))
            )
            return network_dict(network), {h for h in hosts if h}

    def ports_of(self, instance_uuid: str) -> list[dict[str, Any]]:
        """A server's ports, in device order."""
        with self.db.session() as session:
            rows = session.execute(
                select(Port, Network)
                .join(Network, Port.network_uuid == Network.uuid)
                .where(Port.instance_uuid == instance_uuid)
                .order_by(Port.device_index)
            ).all()
            return [port_dict(port, network) for port, network in rows]

    def bind(self, instance_uuid: str, host: str) -> None:
        """Record that a server's ports live on ``host``."""
        with self.db.session() as session:
            networks = []
            for port in session.scalars(select(Port).where(Port.instance_uuid == instance_uuid)):
                port.host = host
                networks.append(port.network_uuid)
            _bump(session, networks)

    def release(self, instance_uuid: str) -> list[str]:
        """Remove a server's ports; returns the networks they were on."""
        with self.db.session() as session:
            networks = list(
                session.scalars(
                    select(Port.network_uuid).where(Port.instance_uuid == instance_uuid)
                )
            )
            session.execute(delete(Port).where(Port.instance_uuid == instance_uuid))
            _bump(session, networks)
            return sorted(set(networks))

    def hosts_of(self, network_uuid: str) -> set[str]:
        """Hosts that have ports on a network."""
        with self.db.session() as session:
            hosts = session.scalars(
                select(Port.host).where(Port.network_uuid == network_uuid, Port.host.is_not(None))
            )
            return {h for h in hosts if h}

    def ports_on_host(self, host: str) -> list[dict[str, Any]]:
        """Every port bound to ``host``."""
        with self.db.session() as session:
            rows = session.execute(
                select(Port, Network)
                .join(Network, Port.network_uuid == Network.uuid)
                .where(Port.host == host)
                .order_by(Port.instance_uuid, Port.device_index)
            ).all()
            return [port_dict(port, network) for port, network in rows]

    def networks_of_host(self, host: str) -> list[dict[str, Any]]:
        """Networks that have ports on ``host``."""
        with self.db.session() as session:
            rows = session.scalars(
                select(Network)
                .where(Network.uuid.in_(select(Port.network_uuid).where(Port.host == host)))
                .order_by(Network.created_at)
            )
            return [network_dict(n) for n in rows]


def _bump(session: Any, network_uuids: Iterable[str]) -> None:
    """A new topology revision for each network (same transaction as the change)."""
    for network_uuid in set(network_uuids):
        session.execute(
            update(Network)
            .where(Network.uuid == network_uuid)
            .values(revision=Network.revision + 1)
            .execution_options(synchronize_session=False)
        )


def _uuid() -> str:
    return str(uuid.uuid4())


def _random_mac() -> str:
    return ":".join([MAC_PREFIX] + ["%02x" % random.randrange(256) for _ in range(3)])


def _first_free(network: Network, taken: Iterable[str]) -> str:
    """The lowest host address of the subnet that is neither taken nor the gateway."""
    subnet = ipaddress.ip_network(network.cidr)
    skip = set(taken) | ({network.gateway} if network.gateway else set())
    for address in subnet.hosts():
        if str(address) not in skip:
            return str(address)
    raise exception.NetworkFull(network=network.name, reason="no free address in %s" % subnet)
