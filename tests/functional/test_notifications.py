"""Versioned notifications on the real bus: a consumer on their topic sees a
server's life (create, power changes, delete) in order, with its record."""

from __future__ import annotations

import threading
import time
from typing import Any

import oslo_messaging as messaging
from cloud_env import Cloud
from oslo_config import cfg

from compute_driver import conf as cd_conf


class Collector:
    """A notification endpoint that keeps what it hears."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.heard = threading.Condition(self.lock)

    def _keep(self, priority: str, event_type: str, payload: dict[str, Any]) -> None:
        with self.heard:
            self.events.append((priority, event_type, payload))
            self.heard.notify_all()

    def wait_named(self, name: str, event: str, timeout: float = 60) -> list[str]:
        """The events about the server named ``name``, once ``event`` is among them."""

        def about() -> list[str]:
            return [e for _, e, p in self.events if p["instance"]["name"] == name]

        with self.heard:
            if not self.heard.wait_for(lambda: event in about(), timeout):
                raise AssertionError("%s not heard for %s; heard %s" % (event, name, about()))
            return about()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):  # noqa: ANN001
        self._keep("info", event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):  # noqa: ANN001
        self._keep("error", event_type, payload)

    def of(self, uuid: str) -> list[str]:
        with self.lock:
            return [e for _, e, p in self.events if p["instance"]["uuid"] == uuid]


def _wait(collector: Collector, uuid: str, event: str, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event in collector.of(uuid):
            return collector.of(uuid)
        time.sleep(0.2)
    raise AssertionError("%s not heard for %s; heard %s" % (event, uuid, collector.of(uuid)))


def test_a_servers_life_is_notified_in_order(cloud: Cloud, guest_image: dict) -> None:
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    # NOTE: the notifications consumer's own broker user: a client's may not listen.
    conf(cloud.config_args("notifications"), default_config_files=[])
    transport = messaging.get_notification_transport(conf)
    collector = Collector()
    listener = messaging.get_notification_listener(
        transport,
        [messaging.Target(topic="versioned_notifications")],
        [collector],
        executor="threading",
    )
    listener.start()
    try:
        server = cloud.create_server("ft-notify", guest_image["uuid"])
        uuid = server["uuid"]
        _wait(collector, uuid, "instance.create.end")
        cloud.ok("server", "stop", uuid, "--wait", "--wait-timeout", "180")
        _wait(collector, uuid, "instance.power_off")
        cloud.ok("server", "delete", uuid, "--wait")
        heard = _wait(collector, uuid, "instance.delete.end")
        assert heard == [
            "instance.create.start",
            "instance.create.end",
            "instance.power_off",
            "instance.delete.start",
            "instance.delete.end",
        ], heard
        with collector.lock:
            end = next(p for _, e, p in collector.events if e == "instance.create.end")
        assert end["version"] == "1.0"
        assert end["instance"]["host"] == cloud.host
        assert end["instance"]["vm_state"] == "active"

        # A build with no valid host is an error notification.
        cloud.ok("flavor", "create", "ft-huge", "--vcpus", "1", "--ram", "4000000", "--disk", "1")
        refused = cloud.ctl(
            "server",
            "create",
            "ft-notify-big",
            "--flavor",
            "ft-huge",
            "--image",
            guest_image["uuid"],
            "--project",
            "ft",
        )
        assert refused.rc != 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with collector.lock:
                errors = [
                    (e, p)
                    for pr, e, p in collector.events
                    if pr == "error" and p["instance"]["name"] == "ft-notify-big"
                ]
            if errors:
                break
            time.sleep(0.2)
        assert errors and errors[0][0] == "instance.create.error"
        assert errors[0][1]["instance"]["fault"].startswith("No valid host")
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()
        for server in cloud.ok("server", "list"):
            if server["name"].startswith("ft-notify"):
                cloud.ctl("server", "delete", server["uuid"], "--wait")
        cloud.ctl("flavor", "delete", "ft-huge")


def test_a_create_that_fails_after_its_start_sends_create_error_once(
    cloud: Cloud, guest_image: dict
) -> None:
    """A full network (no address for the sixth port) and a boot volume on a
    host the flavor does not fit: each create fails after
    ``instance.create.start`` and is heard as ``instance.create.error``
    once (the delete that follows proves nothing else came in between)."""
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    conf(cloud.config_args("notifications"), default_config_files=[])
    transport = messaging.get_notification_transport(conf)
    collector = Collector()
    listener = messaging.get_notification_listener(
        transport,
        [messaging.Target(topic="versioned_notifications")],
        [collector],
        executor="threading",
    )
    listener.start()
    network = cloud.ok(
        "network", "create", "ft-full", "--type", "vxlan", "--cidr", "10.91.0.0/29",
        "--project", "ft",
    )  # fmt: skip
    volume = cloud.ok(
        "volume", "create", "ft-bootfail", "--size", "1", "--backend", "dir", "--project", "ft"
    )
    cloud.ok("flavor", "create", "ft-toobig", "--vcpus", "1", "--ram", "4000000", "--disk", "1")
    try:
        cases = {
            # NOTE: a /29 has five addresses besides the gateway.
            "ft-notify-full": ["--network", network["uuid"]] * 6,
            "ft-notify-bootvol": ["--boot-volume", volume["uuid"], "--flavor", "ft-toobig"],
        }
        for name, extra in cases.items():
            args = ["server", "create", name, "--image", guest_image["uuid"], "--project", "ft"]
            if "--flavor" not in extra:
                args += ["--flavor", "m1.tiny"]
            refused = cloud.ctl(*args, *extra)
            assert refused.rc != 0, (name, refused)
            collector.wait_named(name, "instance.create.error")
            server = next(s for s in cloud.ok("server", "list") if s["name"] == name)
            assert (server["vm_state"], server["task_state"]) == ("error", None)
            cloud.ok("server", "delete", server["uuid"], "--wait")
            heard = collector.wait_named(name, "instance.delete.end")
            assert heard == [
                "instance.create.start",
                "instance.create.error",
                "instance.delete.start",
                "instance.delete.end",
            ], (name, heard)
        freed = cloud.ok("volume", "show", volume["uuid"])
        assert (freed["status"], freed["attached_to"]) == ("available", None)
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()
        for server in cloud.ok("server", "list"):
            if server["name"] in ("ft-notify-full", "ft-notify-bootvol"):
                cloud.ctl("server", "delete", server["uuid"], "--wait")
        cloud.ctl("volume", "delete", volume["uuid"])
        cloud.ctl("network", "delete", network["uuid"])
        cloud.ctl("flavor", "delete", "ft-toobig")
