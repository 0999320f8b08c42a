"""``computectl volume ...``: volumes on the storage backends."""

from __future__ import annotations

import argparse
from typing import Any

VOLUME_COLUMNS = [
    "name",
    "uuid",
    "project",
    "size_gb",
    "backend",
    "status",
    "attached_to",
    "target_dev",
]
VOLUME_SNAPSHOT_COLUMNS = ["name", "size_gb", "created_at"]


def add_parser(groups: Any) -> None:
    """Add the ``volume`` command group to ``computectl``'s subparsers."""
    volume = groups.add_parser("volume", help="volumes").add_subparsers(
        dest="action", required=True
    )
    create = volume.add_parser("create", help="create a volume (empty, or from an image)")
    create.add_argument("name")
    create.add_argument("--size", type=int, required=True, metavar="GIB", dest="size_gb")
    create.add_argument("--backend", required=True, help="storage backend, e.g. dir, nfs, rbd")
    create.add_argument("--image", help="fill it with this image (a bootable volume)")
    create.add_argument(
        "--project",
        help="the project it belongs to (default: the --project the command acts as, else default)",
    )
    create.add_argument("--host", help="make it on this host (local backends)")
    lst = volume.add_parser("list", help="list volumes")
    lst.add_argument("--project")
    volume.add_parser("show", help="show one volume").add_argument("volume")
    volume.add_parser("delete", help="delete a volume that is not attached").add_argument("volume")
    for verb, text in (
        ("attach", "attach a volume to a server of its project (live if it runs)"),
        ("detach", "detach a volume once the guest has released it"),
    ):
        cmd = volume.add_parser(verb, help=text)
        cmd.add_argument("server")
        cmd.add_argument("volume")
    resize = volume.add_parser("resize", help="grow a volume (a running guest sees it)")
    resize.add_argument("volume")
    resize.add_argument("--size", type=int, required=True, metavar="GIB", dest="size_gb")
    snapshot = volume.add_parser("snapshot", help="snapshots of a volume").add_subparsers(
        dest="snapshot_action", metavar="ACTION", required=True
    )
    snapshot.add_parser("list", help="a volume's snapshots").add_argument("volume")
    for verb, text in (
        ("create", "take a snapshot"),
        ("revert", "go back to a snapshot (detach it first)"),
        ("delete", "delete a snapshot"),
    ):
        cmd = snapshot.add_parser(verb, help=text)
        cmd.add_argument("volume")
        cmd.add_argument("name")


def run(args: argparse.Namespace, client: Any) -> tuple[Any, list[str] | None]:
    """Do the ``volume`` command ``args`` asks; return (result, table columns)."""
    action = args.action
    if action == "create":
        return client.create_volume(
            args.name, args.size_gb, args.backend, args.project, args.image, args.host
        ), None
    if action == "list":
        return client.list_volumes(args.project), VOLUME_COLUMNS
    if action == "show":
        return client.show_volume(args.volume), None
    if action == "delete":
        return client.delete_volume(args.volume), None
    if action == "attach":
        return client.attach_volume(args.server, args.volume), None
    if action == "detach":
        return client.detach_volume(args.server, args.volume), None
    if action == "resize":
        return client.resize_volume(args.volume, args.size_gb), None
    verb = args.snapshot_action
    if verb == "list":
        return client.volume_snapshot(args.volume, "list"), VOLUME_SNAPSHOT_COLUMNS
    return client.volume_snapshot(args.volume, verb, args.name), None
