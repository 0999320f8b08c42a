"""The scheduler's network methods (scheduler API 1.0), ports of new servers,
and the tunnel topology it fans out to the agents.

The scheduler owns networks: it allocates segments (VNIs, VLAN IDs), MACs
and fixed IPs. Agents only wire what they are told. When a network gains or
loses a port on a host, every host with ports on that network gets the new
list of the others' tunnel endpoints (unicast only, l2population style: a
host without ports of a network hears nothing of it).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver import exception
from compute_driver.conf.networks import MAX_VNI
from compute_driver.rpc import compute_api, schemas
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler import records, scope
from compute_driver.scheduler.network_store import NetworkStore, segment_key
from compute_driver.scheduler.scope import scheduler_method
from compute_driver.scheduler.store import Store
from compute_driver.states import ATTACH_STATES

LOG = logging.getLogger(__name__)

#: Encapsulation overhead over IPv4: outer IP 20 + UDP 8 + header 8 + inner Ethernet 14.
TUNNEL_OVERHEAD = 50
TUNNEL_TYPES = ("vxlan", "geneve")

#: Ranges no tenant subnet may touch: the addresses there mean something to
#: every host and guest (RFC 6890), so a guest given one would answer for, or
#: be unreachable from, a whole class of addresses.
SPECIAL_RANGES = tuple(
    (ipaddress.ip_network(cidr), why)
    for cidr, why in (
        ("0.0.0.0/8", "unspecified ('this network')"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved (and broadcast)"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
    )
)


def agent_network(network: dict[str, Any]) -> dict[str, Any]:
    """A network as the compute API takes it (``schemas.NETWORK``)."""
    return records.network_spec(network).to_wire()


def agent_port(port: dict[str, Any], network: dict[str, Any]) -> dict[str, Any]:
    """A port as the compute API takes it (``schemas.PORT``)."""
    return records.port_spec(port, network).to_wire()


class NetworkManager:
    """Serves the network methods of topic ``scheduler``."""

    target = messaging.Target(version="1.0")

    def __init__(self, conf: cfg.ConfigOpts, store: Store, compute: compute_api.ComputeAPI) -> None:
        self.conf = conf
        self.store = store
        self.networks = NetworkStore(store.db)
        self.compute = compute

    # --- create, list, show, delete ------------------------------------------------

    @scheduler_method
    def create_network(
        self,
        context: RequestContext,
        uuid: str,
        name: str,
        type: str,
        cidr: str,
        project: str | None = None,
        segment: int | None = None,
        physnet: str | None = None,
        gateway: str | None = None,
        mtu: int | None = None,
    ) -> dict[str, Any]:
        project = scope.owner(context, project, "create_network")
        opts = self.conf.networks
        subnet, gateway = _subnet(name, cidr, gateway, opts.reserved_cidrs)
        if type in TUNNEL_TYPES:
            if physnet is not None:
                raise exception.InvalidNetwork(
                    network=name, reason="%s networks ride the tunnels, not a physnet" % type
                )
            low, high = opts.vni_min, min(opts.vni_max, MAX_VNI)
        elif type == "vlan":
            physnet = physnet or opts.default_physnet
            low, high = opts.vlan_min, opts.vlan_max
        else:
            physnet = physnet or opts.default_physnet
            if segment is not None:
                raise exception.InvalidNetwork(network=name, reason="flat networks have no segment")
            low = high = 0
        if segment is not None and not low <= segment <= high:
            raise exception.InvalidNetwork(
                network=name,
                reason="%s segment %d is outside the allowed range %d-%d"
                % (type, segment, low, high),
            )
        largest = opts.underlay_mtu - (TUNNEL_OVERHEAD if type in TUNNEL_TYPES else 0)
        if mtu is not None and mtu > largest:
            raise exception.InvalidNetwork(
                network=name,
                reason="MTU %d is more than the underlay's %d minus the %s overhead allows (%d)"
                % (mtu, opts.underlay_mtu, type, largest),
            )
        fields = {
            "uuid": uuid,
            "name": name,
            "project": project,
            "type": type,
            "physnet": physnet,
            "cidr": str(subnet),
            "gateway": gateway,
            "mtu": mtu or largest,
        }
        if type == "flat" or segment is not None:
            fields.update(segment=segment, segment_key=segment_key(type, segment, physnet))
            return self._create(fields, requested=True)
        prefix = segment_key(type, 0, physnet).rsplit(":", 1)[0] + ":"
        for _ in range(64):
            used = self.networks.used_segments(prefix)
            free = next(
                (s for s in range(low, high + 1) if segment_key(type, s, physnet) not in used),
                None,
            )
            if free is None:
                raise exception.SegmentInUse(type=type, segment="any of %d-%d" % (low, high))
            fields.update(segment=free, segment_key=segment_key(type, free, physnet))
            try:
                return self._create(fields, requested=False)
            except exception.SegmentInUse:
                continue  # a concurrent create took it: the next one
        raise exception.SegmentInUse(type=type, segment="(too many concurrent creates)")

    def _create(self, fields: dict[str, Any], requested: bool) -> dict[str, Any]:
        existing = self._existing(fields["uuid"])
        if existing is not None:
            if existing["project"] != fields["project"]:
                # NOTE: the owner is the caller's project (scope.owner).
                raise exception.Conflict(
                    reason="UUID %s is taken; a create needs a new one" % fields["uuid"]
                )
            return existing
        record = self.networks.create(**fields)
        LOG.info(
            "Network %s (%s): %s segment %s, %s, MTU %d",
            record["name"],
            record["uuid"],
            record["type"],
            record["segment"],
            record["cidr"],
            record["mtu"],
        )
        return record

    def _existing(self, uuid: str) -> dict[str, Any] | None:
        try:
            return self.networks.get(uuid)
        except exception.NetworkNotFound:
            return None

    @scheduler_method
    def list_networks(
        self, context: RequestContext, project: str | None = None, all_projects: bool = False
    ) -> list[dict[str, Any]]:
        return self.networks.list_networks(scope.list_project(context, project, all_projects))

    @scheduler_method
    def show_network(self, context: RequestContext, network: str) -> dict[str, Any]:
        record = self.networks.get(network, context)
        record["hosts"] = sorted(self.networks.hosts_of(record["uuid"]))
        return record

    @scheduler_method
    def delete_network(self, context: RequestContext, network: str) -> dict[str, Any]:
        return self.networks.delete(network, context)

    # --- ports of servers, topology ---------------------------------------------------

    def allocate(
        self, instance_uuid: str, project: str, networks: list[str], context: RequestContext
    ) -> list[dict[str, Any]]:
        """Ports (``schemas.PORT``) of a new server, one per network, in order.

        :raises NetworkNotFound: a network ``context`` does not see.
        :raises ProjectMismatch: a network of another project (an admin's create).
        """
        records = {n: self.of_project(n, project, instance_uuid, context) for n in networks}
        ports = self.networks.allocate_ports(instance_uuid, [records[n]["uuid"] for n in networks])
        return [agent_port(p, records[n]) for p, n in zip(ports, networks, strict=True)]

    def of_project(
        self, network: str, project: str, instance: str, context: RequestContext
    ) -> dict[str, Any]:
        """The network ``network`` names (as ``context`` sees it), if a server
        of ``project`` may have a port on it.

        :raises NetworkNotFound, ProjectMismatch: it may not.
        """
        record = self.networks.get(network, context)
        if record["project"] != project:
            raise exception.ProjectMismatch(what="Network", name=record["name"], instance=instance)
        return record

    # --- interfaces of running servers --------------------------------------------

    @scheduler_method
    def attach_interface(
        self, context: RequestContext, server: str, network: str
    ) -> dict[str, Any]:
        instance = self.store.get_instance(server, context=context)
        if not instance["host"] or instance["vm_state"] not in ATTACH_STATES:
            raise exception.InstanceStateConflict(
                instance=instance["name"],
                state=instance["vm_state"],
                reason="interfaces attach to active, stopped or paused servers on a host",
            )
        record = self.of_project(network, instance["project"], instance["name"], context)
        # NOTE: one limit for create and attach, the one every payload that
        # lists a server's ports (delete too) accepts.
        port = self.networks.allocate_next_port(
            instance["uuid"], record["uuid"], instance["host"], limit=schemas.MAX_PORTS
        )
        try:
            self.compute.attach_interface(
                instance["host"], instance["uuid"], agent_port(port, record)
            )
        except exception.ComputeDriverError:
            self.networks.delete_port(port["uuid"])
            raise
        self.fan_out([record["uuid"]])
        return port

    @scheduler_method
    def detach_interface(self, context: RequestContext, server: str, port: str) -> dict[str, Any]:
        instance = self.store.get_instance(server, context=context)
        found = next(
            (p for p in self.networks.ports_of(instance["uuid"]) if p["uuid"] == port), None
        )
        if found is None:
            raise exception.NotFound(what="Port of server %s" % instance["name"], name=port)
        network = self.networks.get(found["network"])
        self.compute.detach_interface(
            instance["host"], instance["uuid"], agent_port(found, network)
        )
        self.networks.delete_port(found["uuid"])
        self.fan_out([network["uuid"]])
        return found

    @scheduler_method
    def list_interfaces(self, context: RequestContext, server: str) -> list[dict[str, Any]]:
        return self.networks.ports_of(self.store.get_instance(server, context=context)["uuid"])

    def bind(self, instance_uuid: str, host: str) -> None:
        """Bind a new server's ports to the host it was placed on."""
        self.networks.bind(instance_uuid, host)

    def networks_of_server(self, instance_uuid: str) -> list[str]:
        """The UUIDs of the networks a server has ports on, sorted."""
        return sorted({p["network"] for p in self.networks.ports_of(instance_uuid)})

    def agent_ports(self, instance_uuid: str) -> list[dict[str, Any]]:
        """The ports of an existing server, as the agent takes them."""
        return [
            agent_port(p, self.networks.get(p["network"]))
            for p in self.networks.ports_of(instance_uuid)
        ]

    def _endpoints(self) -> dict[str, str]:
        """Host name -> tunnel endpoint IP, from the hosts' last reports."""
        hosts = self.store.list_hosts(self.conf.scheduler.service_down_time)
        return {
            h["name"]: h["capabilities"]["tunnel_ip"]
            for h in hosts
            if h["capabilities"].get("tunnel_ip")
        }

    def fan_out(self, network_uuids: list[str]) -> None:
        """Tell every host with ports on these networks where the others are."""
        if not network_uuids:
            return
        endpoints = self._endpoints()
        for network_uuid in network_uuids:
            try:
                record, hosts = self.networks.topology(network_uuid)
            except exception.NetworkNotFound:
                continue
            # NOTE: the revision travels with the list: when two fan-outs of
            # one network overlap, agents keep the newer list.
            network = agent_network(record)
            for host in sorted(hosts):
                remotes = sorted(endpoints[h] for h in hosts if h != host and h in endpoints)
                try:
                    self.compute.update_topology(host, network, remotes)
                except exception.ComputeDriverError as exc:
                    # NOTE: the agent resyncs from host_networks when it starts.
                    LOG.warning("Topology of %s not sent to %s: %s", network["name"], host, exc)

    def host_networks(self, host: str) -> list[dict[str, Any]]:
        """For a (re)starting agent: its networks and each one's remote endpoints.

        NOTE: not a scheduler method: agents ask through the agent reports
        API (compute_driver/scheduler/reports.py).
        """
        endpoints = self._endpoints()
        ports = self.networks.ports_on_host(host)
        answer = []
        for network in self.networks.networks_of_host(host):
            hosts = self.networks.hosts_of(network["uuid"])
            answer.append(
                {
                    "network": agent_network(network),
                    "remote_endpoints": sorted(
                        endpoints[h] for h in hosts if h != host and h in endpoints
                    ),
                    "ports": [
                        {"instance": p["instance"], "port": agent_port(p, network)}
                        for p in ports
                        if p["network"] == network["uuid"]
                    ],
                }
            )
        return answer


def _subnet(
    name: str, cidr: str, gateway: str | None, reserved: Iterable[str] = ()
) -> tuple[ipaddress.IPv4Network, str]:
    """The subnet and gateway of a new network.

    :param reserved: the operator's ``[networks] reserved_cidrs`` (the underlay's).
    :raises InvalidNetwork: not an IPv4 network of at least 4 addresses, one
        that overlaps a special or reserved range, or a gateway outside it.
    """
    try:
        subnet = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise exception.InvalidNetwork(network=name, reason="cidr %r: %s" % (cidr, exc)) from None
    for special, why in SPECIAL_RANGES:
        if subnet.version == special.version and subnet.overlaps(special):
            raise exception.InvalidNetwork(
                network=name, reason="cidr %s overlaps %s, which is %s" % (cidr, special, why)
            )
    for item in reserved:
        taken = ipaddress.ip_network(item, strict=False)
        if subnet.version == taken.version and subnet.overlaps(taken):
            raise exception.InvalidNetwork(
                network=name,
                reason="cidr %s overlaps %s, reserved by [networks] reserved_cidrs" % (cidr, item),
            )
    if not isinstance(subnet, ipaddress.IPv4Network) or subnet.prefixlen > 29:
        raise exception.InvalidNetwork(
            network=name, reason="cidr %s: an IPv4 subnet of /29 or larger is needed" % cidr
        )
    first = next(subnet.hosts())
    if gateway is None:
        return subnet, str(first)
    try:
        address = ipaddress.ip_address(gateway)
    except ValueError:
        raise exception.InvalidNetwork(
            network=name, reason="gateway %r is not an address" % gateway
        ) from None
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise exception.InvalidNetwork(
            network=name, reason="gateway %s is not a host address of %s" % (gateway, subnet)
        )
    return subnet, str(address)
