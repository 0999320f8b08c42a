"""``computectl demo``: boot a tiny guest through the bus, show it, remove it.

Against running services (``make demo`` starts them) it imports the test
guest built by ``tools/build-test-guest.sh``, creates a server with user
data, waits for ACTIVE, prints the server table and the console lines that
prove the guest read its config drive, then deletes what it made.

``--embedded`` runs the same flow in this process with no root and no
services: the in-memory kombu transport, SQLite in a temporary directory,
libvirt's ``test:///default`` driver and the ``noop`` network plugin.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid as uuidlib
from typing import Any

from compute_driver import exception

DEMO_FLAVOR = "m1.tiny"
USER_DATA = b"#!/bin/sh\necho 'CD-DEMO hello from user-data'\n"
MARKER_READY = "CD-GUEST ready"
MARKER_PREFIXES = ("CD-GUEST", "CD-DEMO")


def say(text: str) -> None:
    print("==> " + text, flush=True)


def _wait_for_host(client: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hosts = [h for h in client.list_hosts() if h["state"] == "up" and h["enabled"]]
        if hosts:
            return hosts[0]["name"]
        time.sleep(0.5)
    raise exception.NoValidHost(
        instance="demo", reason="no compute host reported within %d s" % timeout
    )


def _wait_for_console(client: Any, server: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        console = client.console_log(server, 1000).splitlines()
        lines = [line for line in console if line.startswith(MARKER_PREFIXES)]
        if any(line.startswith(MARKER_READY) for line in lines):
            return lines
        time.sleep(1)
    raise exception.BuildFailed(
        instance=server,
        reason="the guest did not print %r within %d s: %s" % (MARKER_READY, timeout, lines),
    )


def run_flow(client: Any, image_args: dict[str, Any], boot_timeout: float, console: bool) -> int:
    """The demo proper, against any running scheduler and agent."""
    from compute_driver.cli.output import SERVER_COLUMNS, printable, table

    name = "demo-" + uuidlib.uuid4().hex[:6]
    host = _wait_for_host(client, 60)
    say("compute host %s is up" % host)
    image = client.import_image(**image_args)
    say("imported image %s (%s)" % (image["name"], image["uuid"]))
    server = None
    try:
        server = client.create_server(
            name, DEMO_FLAVOR, image["uuid"], project="demo", user_data=USER_DATA
        )
        say("created server %s (%s); waiting for ACTIVE" % (name, server["uuid"]))
        started = time.monotonic()
        server = client.wait_for_server(server["uuid"], timeout=boot_timeout)
        say("ACTIVE on %s after %.1f s" % (server["host"], time.monotonic() - started))
        table(client.list_servers(project="demo"), SERVER_COLUMNS)
        if console:
            say("waiting for the guest to read its config drive")
            for line in _wait_for_console(client, server["uuid"], boot_timeout):
                print("    " + printable(line))
            say("booted in %.1f s" % (time.monotonic() - started))
        else:
            say("the test driver runs no guest: no console to show")
    finally:
        if server is not None:
            say("deleting server %s" % name)
            client.delete_server(server["uuid"])
            client.wait_for_delete(server["uuid"])
        client.delete_image(image["uuid"])
        say("removed the server and the image")
    return 0


def _guest_image_args(guest_dir: str) -> dict[str, Any]:
    manifest_path = os.path.join(guest_dir, "guest.json")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except OSError as exc:
        raise exception.Invalid(
            reason="no test guest at %s (%s); build it with tools/build-test-guest.sh %s"
            % (guest_dir, exc.strerror, guest_dir)
        ) from exc
    return {
        "name": "demo-guest-" + uuidlib.uuid4().hex[:6],
        # NOTE: names relative to the scheduler's [image] import_path, which
        # tools/demo.sh sets to the guest directory.
        "file": manifest["disk"],
        "kernel": manifest["kernel"],
        "initrd": manifest["initrd"],
        "cmdline": manifest["cmdline"],
    }


def run(args: argparse.Namespace, config_args: list[str]) -> int:
    if args.embedded:
        return run_embedded(args)
    from compute_driver import client as client_mod
    from compute_driver import config

    conf = config.load(config_args, "computectl")
    client = client_mod.Client(conf, admin=True)
    return run_flow(client, _guest_image_args(args.guest_dir), args.boot_timeout, console=True)


EMBEDDED_CONFIG = """\
[DEFAULT]
transport_url = kombu+memory:////
state_path = {workdir}
host = embedded-host
default_log_levels = root=WARNING,kombu=ERROR,oslo.messaging=ERROR

[database]
connection = sqlite:///{workdir}/scheduler.sqlite

[image]
import_path = {workdir}/import

[libvirt]
uri = test:///default

[agent]
network_plugins = noop
report_interval = 1
"""


def run_embedded(args: argparse.Namespace) -> int:
    """Scheduler and agent as threads of this process, over kombu's memory transport."""
    from oslo_config import cfg

    from compute_driver import client as client_mod
    from compute_driver import config
    from compute_driver.agent.service import AgentService
    from compute_driver.rpc import transport
    from compute_driver.scheduler.service import SchedulerService

    workdir = tempfile.mkdtemp(prefix="compute-driver-demo-")
    conf = cfg.CONF
    try:
        conf_file = os.path.join(workdir, "embedded.conf")
        with open(conf_file, "w") as f:
            f.write(EMBEDDED_CONFIG.format(workdir=workdir))
        config.load(["--config-file", conf_file], "computectl", default_config_files=[])
        from oslo_log import log as oslo_log

        from compute_driver.rpc import endpoint

        oslo_log.setup(conf, "compute-driver")
        endpoint.bound_log_records()
        say(
            "embedded: memory transport, SQLite in %s, libvirt test:///default, noop network"
            % workdir
        )
        os.mkdir(os.path.join(workdir, "import"), 0o700)
        disk = os.path.join(workdir, "import", "tiny.raw")
        with open(disk, "wb") as f:
            f.truncate(16 * 1024 * 1024)
        scheduler = SchedulerService(conf)
        agent = AgentService(conf)
        scheduler.start()
        agent.start()
        try:
            image_args = {"name": "embedded-image", "file": "tiny.raw"}
            return run_flow(
                client_mod.Client(conf, admin=True), image_args, args.boot_timeout, console=False
            )
        finally:
            agent.stop()
            scheduler.stop()
            transport.cleanup()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
