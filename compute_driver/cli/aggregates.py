"""``computectl aggregate ...`` and ``computectl server group ...``."""

from __future__ import annotations

import argparse
from typing import Any

AGGREGATE_COLUMNS = ["name", "availability_zone", "hosts", "properties"]
GROUP_COLUMNS = ["name", "uuid", "project", "policy", "members"]
POLICIES = ["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]


def add_parser(groups: Any, key_value: Any) -> None:
    """Add the ``aggregate`` command group to ``computectl``'s subparsers."""
    aggregate = groups.add_parser("aggregate", help="host aggregates and zones").add_subparsers(
        dest="action", required=True
    )
    create = aggregate.add_parser("create", help="create an aggregate")
    create.add_argument("name")
    create.add_argument("--availability-zone", help="put its hosts in this zone")
    setter = aggregate.add_parser("set", help="set the zone and properties of an aggregate")
    setter.add_argument("name")
    setter.add_argument("--availability-zone", help="put its hosts in this zone")
    setter.add_argument(
        "--no-availability-zone", action="store_true", help="take its hosts out of its zone"
    )
    setter.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=key_value,
        help="a property (repeatable; KEY= removes it), matched by flavor extra specs "
        "aggregate_instance_extra_specs:KEY=VALUE",
    )
    for verb, text in (("add-host", "add a host"), ("remove-host", "remove a host")):
        cmd = aggregate.add_parser(verb, help=text)
        cmd.add_argument("name")
        cmd.add_argument("host")
    aggregate.add_parser("list", help="list aggregates")
    aggregate.add_parser("show", help="show one aggregate").add_argument("name")
    aggregate.add_parser("delete", help="delete an aggregate").add_argument("name")


def add_group_parser(server: Any) -> None:
    """Add ``server group create|list|show|delete`` to the ``server`` subparsers."""
    group = server.add_parser("group", help="server groups (affinity)").add_subparsers(
        dest="group_action", metavar="ACTION", required=True
    )
    create = group.add_parser("create", help="create a server group")
    create.add_argument("name")
    create.add_argument("--policy", required=True, choices=POLICIES)
    create.add_argument(
        "--project",
        help="the project it belongs to (default: the --project the command acts as, else default)",
    )
    lst = group.add_parser("list", help="list server groups")
    lst.add_argument("--project")
    # NOTE: dest is not "group": that name holds computectl's command group
    # ("server"), which a positional named "group" would overwrite.
    group.add_parser("show", help="show one server group").add_argument(
        "server_group", metavar="group"
    )
    group.add_parser("delete", help="delete an empty server group").add_argument(
        "server_group", metavar="group"
    )


def run(args: argparse.Namespace, client: Any) -> tuple[Any, list[str] | None]:
    """Do the ``aggregate`` command ``args`` asks."""
    action = args.action
    if action == "create":
        return client.create_aggregate(args.name, args.availability_zone), None
    if action == "set":
        return client.set_aggregate(
            args.name,
            args.availability_zone,
            dict(args.property),
            no_availability_zone=args.no_availability_zone,
        ), None
    if action == "add-host":
        return client.add_aggregate_host(args.name, args.host), None
    if action == "remove-host":
        return client.remove_aggregate_host(args.name, args.host), None
    if action == "list":
        return client.list_aggregates(), AGGREGATE_COLUMNS
    if action == "show":
        return client.show_aggregate(args.name), None
    return client.delete_aggregate(args.name), None


def run_group(args: argparse.Namespace, client: Any) -> tuple[Any, list[str] | None]:
    """Do the ``server group`` command ``args`` asks."""
    verb = args.group_action
    if verb == "create":
        return client.create_server_group(args.name, args.policy, args.project), None
    if verb == "list":
        return client.list_server_groups(args.project), GROUP_COLUMNS
    if verb == "show":
        return client.show_server_group(args.server_group), None
    return client.delete_server_group(args.server_group), None
