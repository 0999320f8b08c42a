"""``computectl network ...``: tenant networks."""

from __future__ import annotations

import argparse
from typing import Any

NETWORK_COLUMNS = ["name", "uuid", "project", "type", "segment", "physnet", "cidr", "mtu"]
PORT_COLUMNS = ["uuid", "network_name", "device_index", "mac", "address", "host"]


def add_parser(groups: Any) -> None:
    """Add the ``network`` command group to ``computectl``'s subparsers."""
    network = groups.add_parser("network", help="tenant networks").add_subparsers(
        dest="action", required=True
    )
    create = network.add_parser("create", help="create a network")
    create.add_argument("name")
    create.add_argument(
        "--type", required=True, choices=["flat", "vlan", "vxlan", "geneve"], dest="network_type"
    )
    create.add_argument("--cidr", required=True, help="its IPv4 subnet, e.g. 10.0.0.0/24")
    create.add_argument("--segment", type=int, help="VNI or VLAN ID (allocated when left out)")
    create.add_argument("--physnet", help="physical network of flat and vlan networks")
    create.add_argument("--gateway", help="gateway address (default: the first host address)")
    create.add_argument("--mtu", type=int, help="default: the underlay's minus encapsulation")
    create.add_argument(
        "--project",
        help="the project it belongs to (default: the --project the command acts as, else default)",
    )
    lst = network.add_parser("list", help="list networks")
    lst.add_argument("--project")
    network.add_parser("show", help="show one network").add_argument("network")
    network.add_parser("delete", help="delete a network without ports").add_argument("network")


def run(args: argparse.Namespace, client: Any) -> tuple[Any, list[str] | None]:
    """Do the ``network`` command ``args`` asks; return (result, table columns)."""
    if args.action == "create":
        return client.create_network(
            args.name,
            args.network_type,
            args.cidr,
            args.project,
            args.segment,
            args.physnet,
            args.gateway,
            args.mtu,
        ), None
    if args.action == "list":
        return client.list_networks(args.project), NETWORK_COLUMNS
    if args.action == "show":
        return client.show_network(args.network), None
    return client.delete_network(args.network), None


def add_interface_parser(server: Any) -> None:
    """Add ``server interface attach|detach|list`` to the ``server`` subparsers."""
    interface = server.add_parser("interface", help="a server's network ports").add_subparsers(
        dest="interface_action", metavar="ACTION", required=True
    )
    attach = interface.add_parser("attach", help="one more port (hot-plugged if it runs)")
    attach.add_argument("server")
    attach.add_argument("network")
    detach = interface.add_parser("detach", help="remove a port once the guest released it")
    detach.add_argument("server")
    detach.add_argument("port", help="the port's UUID (see interface list)")
    interface.add_parser("list", help="a server's ports").add_argument("server")


def run_interface(args: argparse.Namespace, client: Any) -> tuple[Any, list[str] | None]:
    """Do the ``server interface`` command ``args`` asks."""
    if args.interface_action == "attach":
        return client.attach_interface(args.server, args.network), None
    if args.interface_action == "detach":
        return client.detach_interface(args.server, args.port), None
    return client.list_interfaces(args.server), PORT_COLUMNS
