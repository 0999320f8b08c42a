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

    def _keep(self, priority: str, event_type: str, payload: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((priority, event_type, payload))

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
