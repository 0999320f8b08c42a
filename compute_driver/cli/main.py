"""``computectl [--config-file F] [-f table|json] COMMAND``.

Exit status: 0 done; 1 failed; 2 invalid input (including usage errors);
3 not found; 4 conflict with the current state; 141 the reader of our output
went away (as a command killed by SIGPIPE). Errors print one line on stderr
naming the thing and the reason. What guests and tenants wrote is printed
with control characters escaped (see ``cli/output.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from compute_driver import disk_image, exception
from compute_driver.cli import aggregates, networks, volumes
from compute_driver.cli.output import SERVER_COLUMNS

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
#: What a shell reports for a command killed by SIGPIPE (128 + 13): the
#: reader of our output (``| head``) went away before we were done.
EXIT_BROKEN_PIPE = 141

EXIT_BY_KIND = {
    "failed": EXIT_FAILED,
    "invalid": EXIT_INVALID,
    "not_found": EXIT_NOT_FOUND,
    "conflict": EXIT_CONFLICT,
}

HOST_COLUMNS = [
    "name",
    "state",
    "enabled",
    "vcpus",
    "vcpus_used",
    "memory_mb",
    "memory_mb_used",
    "disk_gb",
    "disk_gb_used",
]
FLAVOR_COLUMNS = ["name", "vcpus", "memory_mb", "root_gb"]
IMAGE_COLUMNS = ["name", "uuid", "disk_format", "size_bytes", "virtual_size", "kernel_path"]


ACTION_HELP = {
    "stop": "shut the guest down (ACPI), forced off after [libvirt] shutdown_timeout",
    "start": "start a stopped server",
    "reboot": "reboot (ACPI shutdown and start; falls back to --hard)",
    "pause": "freeze the guest's vCPUs",
    "unpause": "let a paused guest run again",
    "suspend": "save the guest's memory to disk and stop it",
    "resume": "restore a suspended server",
}


def key_value(text: str) -> tuple[str, str]:
    """argparse type of --property: KEY=VALUE."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("%r is not KEY=VALUE" % text)
    return key, value


def positive_int(text: str) -> int:
    """argparse type of counts and timeouts: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError("%r is not a positive integer" % text)
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_INVALID, "%s: invalid input: %s\n" % (self.prog, message))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="computectl", description="Drive a compute-driver cloud.")
    parser.add_argument(
        "--config-file",
        action="append",
        default=[],
        metavar="F",
        help="configuration file (repeatable); default /etc/compute-driver/compute-driver.conf",
    )
    parser.add_argument(
        "-f",
        "--format",
        choices=["table", "json"],
        default="table",
        help="output format: tables for people, json (stable keys) for scripts",
    )
    parser.add_argument(
        "--timeout",
        type=positive_int,
        default=None,
        metavar="S",
        help="seconds to wait for each answer (>= 1)",
    )
    parser.add_argument(
        "--project",
        dest="as_project",
        metavar="P",
        help="act as project P: see and change its objects only (default: act as the "
        "operator, who sees every project)",
    )
    parser.add_argument(
        "--admin",
        action="store_true",
        help="with --project: keep the operator's rights (hosts, flavors, every project)",
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    host = groups.add_parser("host", help="compute hosts").add_subparsers(
        dest="action", required=True
    )
    host.add_parser("list", help="list hosts")
    host.add_parser("show", help="show one host").add_argument("host")
    disable = host.add_parser("disable", help="place no new servers on a host")
    disable.add_argument("host")
    disable.add_argument("--reason", help="why (shown in host show)")
    host.add_parser("enable", help="place servers on a host again").add_argument("host")

    flavor = groups.add_parser("flavor", help="server sizes").add_subparsers(
        dest="action", required=True
    )
    flavor.add_parser("list", help="list flavors")
    create = flavor.add_parser("create", help="create a flavor")
    create.add_argument("name")
    create.add_argument("--vcpus", type=int, required=True)
    create.add_argument("--ram", type=int, required=True, metavar="MIB", dest="memory_mb")
    create.add_argument("--disk", type=int, required=True, metavar="GIB", dest="root_gb")
    create.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=key_value,
        help="an extra spec (repeatable), e.g. hw:cpu_policy=dedicated",
    )
    flavor.add_parser("delete", help="delete a flavor").add_argument("name")

    image = groups.add_parser("image", help="images").add_subparsers(dest="action", required=True)
    imp = image.add_parser(
        "import",
        help="import an image from the scheduler's import directory ([image] import_path)",
    )
    imp.add_argument("name")
    imp.add_argument(
        "file",
        help="disk image, named relative to [image] import_path: qcow2 or raw; "
        "vmdk, vdi, vhdx, vpc, qed are converted to qcow2",
    )
    imp.add_argument(
        "--disk-format",
        choices=disk_image.KNOWN_FORMATS,
        help="what the disk is (default: its extension, if it names a format); "
        "content that disagrees is refused",
    )
    imp.add_argument("--kernel", help="kernel for direct kernel boot (relative, like FILE)")
    imp.add_argument("--initrd", help="initrd for direct kernel boot (relative, like FILE)")
    imp.add_argument("--cmdline", help="kernel command line")
    imp.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=key_value,
        help="an image property (repeatable), e.g. hw_disk_bus=scsi",
    )
    from_server = image.add_parser(
        "create", help="make an image (template) of a stopped server's root disk"
    )
    from_server.add_argument("name")
    from_server.add_argument("--server", required=True, help="the stopped server")
    image.add_parser("list", help="list images")
    image.add_parser("show", help="show one image").add_argument("image")
    image.add_parser("delete", help="delete an image").add_argument("image")

    server = groups.add_parser("server", help="servers").add_subparsers(
        dest="action", required=True
    )
    create = server.add_parser("create", help="create a server")
    create.add_argument("name")
    create.add_argument("--flavor", required=True)
    create.add_argument("--image", required=True)
    create.add_argument("--host", help="place on this host (operators)")
    create.add_argument(
        "--project",
        help="the project it belongs to (default: the --project the command acts as, else default)",
    )
    create.add_argument("--user-data", metavar="FILE", help="user data for the guest (<= 64 KiB)")
    create.add_argument(
        "--full-clone",
        action="store_true",
        help="root disk as an independent copy of the image, not a linked clone",
    )
    create.add_argument("--root-backend", help="storage backend of the root disk (e.g. rbd)")
    create.add_argument(
        "--boot-volume", help="boot from this available volume instead of a new root disk"
    )
    create.add_argument(
        "--network",
        action="append",
        default=[],
        dest="networks",
        help="a port on this network (repeatable: eth0, eth1, ... in order)",
    )
    create.add_argument("--availability-zone", help="place it in this zone")
    create.add_argument(
        "--group", dest="server_group", help="join this server group (its policy applies)"
    )
    create.add_argument(
        "--count", type=positive_int, default=1, help="make N servers named NAME-1 ... NAME-N"
    )
    create.add_argument("--wait", action="store_true", help="wait until it is ACTIVE (or failed)")
    create.add_argument("--wait-timeout", type=positive_int, default=600, metavar="S")
    lst = server.add_parser("list", help="list servers")
    lst.add_argument("--project")
    lst.add_argument("--host")
    server.add_parser("show", help="show one server").add_argument("server")
    delete = server.add_parser("delete", help="delete a server")
    delete.add_argument("server")
    delete.add_argument("--wait", action="store_true", help="wait until it is gone")
    for action, text in ACTION_HELP.items():
        act = server.add_parser(action, help=text)
        act.add_argument("server")
        if action == "reboot":
            act.add_argument(
                "--hard",
                action="store_true",
                help="stop at once instead of asking the guest (ACPI)",
            )
        act.add_argument("--wait", action="store_true", help="wait until it is done")
        act.add_argument("--wait-timeout", type=positive_int, default=600, metavar="S")
    snapshot = server.add_parser("snapshot", help="snapshots of a server's disks (and memory)")
    snap = snapshot.add_subparsers(dest="snapshot_action", metavar="ACTION", required=True)
    snap_create = snap.add_parser("create", help="take a snapshot")
    snap_create.add_argument("server")
    snap_create.add_argument("name")
    snap_create.add_argument(
        "--kind",
        choices=["internal", "external"],
        default="internal",
        help="internal: qcow2 snapshot (with memory when running); external: disk-only overlay",
    )
    snap_create.add_argument(
        "--quiesce",
        action="store_true",
        help="require a quiesced snapshot (external, running server, guest agent "
        "answering); without it, one is quiesced whenever the agent is connected",
    )
    snap_create.add_argument("--description", default="")
    snap.add_parser("list", help="a server's snapshots").add_argument("server")
    for verb, text in (("revert", "go back to a snapshot"), ("delete", "delete a snapshot")):
        snap_verb = snap.add_parser(verb, help=text)
        snap_verb.add_argument("server")
        snap_verb.add_argument("name")
    for snap_parser in (snap_create, snap.choices["revert"], snap.choices["delete"]):
        snap_parser.add_argument("--wait", action="store_true", help="wait until it is done")
        snap_parser.add_argument("--wait-timeout", type=positive_int, default=600, metavar="S")
    networks.add_interface_parser(server)
    aggregates.add_group_parser(server)
    server.add_parser("diagnostics", help="CPU, memory, disk and NIC counters").add_argument(
        "server"
    )
    console = server.add_parser("console-log", help="the last lines of the serial console")
    console.add_argument("server")
    console.add_argument("--lines", type=positive_int, default=100)
    # NOTE: the log is the guest's own output: on a terminal its escape
    # sequences are shown escaped; the bytes as they are go to a file only.
    raw = console.add_mutually_exclusive_group()
    raw.add_argument(
        "--raw",
        action="store_true",
        help="write the log unescaped to stdout, which must not be a terminal",
    )
    raw.add_argument("--output", metavar="FILE", help="write the log unescaped to FILE")

    volumes.add_parser(groups)
    networks.add_parser(groups)
    aggregates.add_parser(groups, key_value)

    demo = groups.add_parser("demo", help="boot a tiny guest through the bus, show it, remove it")
    demo.add_argument(
        "--embedded",
        action="store_true",
        help="in-process: memory transport, SQLite, libvirt test driver; no root, no services",
    )
    demo.add_argument(
        "--guest-dir",
        default="/var/lib/compute-driver/test-guest",
        help="directory made by tools/build-test-guest.sh",
    )
    demo.add_argument("--boot-timeout", type=positive_int, default=180, metavar="S")
    for command in _commands(parser):
        _accept_global_options_after(command)
    return parser


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of the commands users run (``server list``, ``demo``, ...)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found.extend(_commands(child) or [child])
    return found


def _accept_global_options_after(command: argparse.ArgumentParser) -> None:
    """Let ``-f``, ``--timeout`` and ``--project`` follow the command too.

    NOTE: python-openstackclient's users write ``server list -f json``; the
    global options stay where they were. SUPPRESS keeps an option that is not
    repeated after the command from resetting the one given before it. A
    command with a ``--project`` of its own (the owner of what it creates, the
    project a list is filtered by) keeps it: acting as that project gives the
    same answer for those commands.
    """
    taken = {flag for action in command._actions for flag in action.option_strings}
    if "--format" not in taken:
        command.add_argument(
            *[f for f in ("-f", "--format") if f not in taken],
            choices=["table", "json"],
            default=argparse.SUPPRESS,
            help="output format (as before the command)",
        )
    if "--timeout" not in taken:
        command.add_argument(
            "--timeout",
            type=positive_int,
            default=argparse.SUPPRESS,
            metavar="S",
            help="seconds to wait for each answer (as before the command)",
        )
    if "--project" not in taken:
        command.add_argument(
            "--project",
            dest="as_project",
            default=argparse.SUPPRESS,
            metavar="P",
            help="act as project P (as before the command)",
        )


def _progress_printer(progress: Any, what: str):
    def show(record: dict[str, Any], elapsed: float) -> None:
        state = record["vm_state"] + ("/" + record["task_state"] if record["task_state"] else "")
        progress.update("%s %s: %s (%.0f s)" % (what, record["name"], state, elapsed))

    return show


SNAPSHOT_COLUMNS = [
    "name",
    "kind",
    "state",
    "quiesced",
    "created_at",
    "parent",
    "children",
    "description",
]


def _snapshot_command(args: argparse.Namespace, client: Any) -> tuple[Any, list[str] | None]:
    from compute_driver.cli.output import Progress

    verb = args.snapshot_action
    if verb == "list":
        return client.list_snapshots(args.server), SNAPSHOT_COLUMNS
    if verb == "create":
        record = client.create_snapshot(
            args.server, args.name, args.kind, args.quiesce, args.description
        )
    elif verb == "revert":
        record = client.revert_snapshot(args.server, args.name)
    else:
        record = client.delete_snapshot(args.server, args.name)
    if args.wait:
        progress = Progress()
        try:
            record = client.wait_for_action(
                record["uuid"],
                "snapshot %s" % verb,
                timeout=args.wait_timeout,
                progress=_progress_printer(progress, "Snapshot " + verb),
            )
        finally:
            progress.done()
    return record, None


def _console_log(args: argparse.Namespace, client: Any) -> tuple[Any, list[str] | None]:
    """``server console-log``: escaped for a terminal, or raw to a file or a pipe."""
    from compute_driver.cli.output import RawText

    if args.raw and sys.stdout.isatty():
        raise exception.Invalid(
            reason="--raw writes the guest's bytes unescaped; redirect stdout to a file or "
            "a pipe, or use --output FILE"
        )
    text = client.console_log(args.server, args.lines)
    if args.output:
        try:
            # NOTE: 0600: a console log may hold what the guest would not show others.
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
        except OSError as exc:
            raise exception.Invalid(
                reason="cannot write --output %s: %s" % (args.output, exc.strerror)
            ) from exc
        return None, None
    return (RawText(text) if args.raw else text), None


def _create_many(
    args: argparse.Namespace, client: Any, user_data: bytes | None, options: dict[str, Any]
) -> list[dict[str, Any]]:
    """``server create --count N``: N servers, then (with --wait) until each settles."""
    records = client.create_servers(
        args.name,
        args.count,
        flavor=args.flavor,
        image=args.image,
        project=args.project,
        host=args.host,
        user_data=user_data,
        **options,
    )
    if args.wait:
        records = [client.wait_for_server(r["uuid"], timeout=args.wait_timeout) for r in records]
    return records


def run_command(args: argparse.Namespace, client: Any) -> tuple[Any, list[str] | None]:
    """Do what ``args`` asks; return (result, table columns)."""
    from compute_driver.cli.output import Progress

    group, action = args.group, getattr(args, "action", None)
    if group == "host":
        if action == "list":
            return client.list_hosts(), HOST_COLUMNS
        if action in ("enable", "disable"):
            reason = getattr(args, "reason", None)
            return client.set_host_enabled(args.host, action == "enable", reason), None
        return client.show_host(args.host), None
    if group == "flavor":
        if action == "list":
            return client.list_flavors(), FLAVOR_COLUMNS
        if action == "create":
            return client.create_flavor(
                args.name, args.vcpus, args.memory_mb, args.root_gb, dict(args.property)
            ), None
        client.delete_flavor(args.name)
        return None, None
    if group == "image":
        if action == "import":
            return client.import_image(
                args.name,
                args.file,
                args.kernel,
                args.initrd,
                args.cmdline,
                properties=dict(args.property),
                disk_format=args.disk_format,
            ), None
        if action == "create":
            return client.create_image_from_server(args.name, args.server), None
        if action == "list":
            return client.list_images(), IMAGE_COLUMNS
        if action == "show":
            return client.show_image(args.image), None
        return client.delete_image(args.image), None
    if group == "server":
        if action == "create":
            user_data = None
            if args.user_data:
                from compute_driver.client import read_user_data

                user_data = read_user_data(args.user_data)
            options = {
                "full_clone": args.full_clone,
                "root_backend": args.root_backend,
                "boot_volume": args.boot_volume,
                "networks": args.networks,
                "availability_zone": args.availability_zone,
                "group": args.server_group,
            }
            if args.count != 1:
                return _create_many(args, client, user_data, options), SERVER_COLUMNS
            record = client.create_server(
                args.name, args.flavor, args.image, args.project, args.host, user_data, **options
            )
            if args.wait:
                progress = Progress()
                try:
                    record = client.wait_for_server(
                        record["uuid"],
                        timeout=args.wait_timeout,
                        progress=_progress_printer(progress, "Building"),
                    )
                finally:
                    progress.done()
            return record, None
        if action == "list":
            return client.list_servers(args.project, args.host), SERVER_COLUMNS
        if action == "show":
            return client.show_server(args.server), None
        if action == "delete":
            record = client.delete_server(args.server)
            if args.wait:
                progress = Progress()
                try:
                    client.wait_for_delete(
                        record["uuid"], progress=_progress_printer(progress, "Deleting")
                    )
                finally:
                    progress.done()
            return None, None
        if action == "diagnostics":
            return client.diagnostics(args.server), None
        if action == "snapshot":
            return _snapshot_command(args, client)
        if action == "interface":
            return networks.run_interface(args, client)
        if action == "group":
            return aggregates.run_group(args, client)
        if action in ACTION_HELP:
            name = "hard-reboot" if action == "reboot" and args.hard else action
            record = client.server_action(args.server, name)
            if args.wait:
                progress = Progress()
                try:
                    record = client.wait_for_action(
                        record["uuid"],
                        name,
                        timeout=args.wait_timeout,
                        progress=_progress_printer(progress, name.capitalize()),
                    )
                finally:
                    progress.done()
            return record, None
        return _console_log(args, client)
    if group == "volume":
        return volumes.run(args, client)
    if group == "network":
        return networks.run(args, client)
    if group == "aggregate":
        return aggregates.run(args, client)
    raise exception.Invalid(reason="unknown command %s" % group)


#: The project of what the operator creates without naming one.
DEFAULT_PROJECT = "default"


def _client(args: argparse.Namespace, conf: Any) -> Any:
    """The client of the caller ``args`` name: a project (``--project`` before
    the command), or the operator (an admin of every project).

    NOTE: computectl holds the bus credential of its config file, which is
    the operator's; a tenant reaches the cloud through an upstream API that
    names the tenant's project (compute_driver.client.Client.for_project).
    """
    from compute_driver import client as client_mod

    creates = "create" in (getattr(args, "action", None), getattr(args, "group_action", None))
    if args.as_project is None:
        if creates and getattr(args, "project", DEFAULT_PROJECT) is None:
            args.project = DEFAULT_PROJECT
        return client_mod.Client(conf, timeout=args.timeout, admin=True)
    return client_mod.Client(conf, timeout=args.timeout, project=args.as_project, admin=args.admin)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_args = [a for f in args.config_file for a in ("--config-file", f)]
    try:
        if args.group == "demo":
            from compute_driver.cli import demo

            return demo.run(args, config_args)
        from compute_driver import config

        conf = config.load(config_args, "computectl")
        from compute_driver.cli.output import emit

        result, columns = run_command(args, _client(args, conf))
        try:
            emit(result, args.format, columns)
            sys.stdout.flush()
        except BrokenPipeError:
            # NOTE: the reader went away (`computectl flavor list | head`):
            # not an error of ours. Point stdout at /dev/null so that the
            # interpreter's final flush does not complain either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        return EXIT_OK
    except exception.ComputeDriverError as exc:
        from compute_driver.cli.output import printable

        # NOTE: messages carry names, reasons and faults that tenants and
        # guests wrote: escaped, so that the error stays one honest line.
        print("computectl: %s: %s" % (exc.code, printable(exc.message)), file=sys.stderr)
        return EXIT_BY_KIND.get(exc.kind, EXIT_FAILED)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
