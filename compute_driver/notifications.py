"""Versioned notifications about servers, on their own topic of the bus.

Every notification has an ``event_type`` (``instance.create.start``, ...) and
a payload ``{"version": "1.0", "instance": {...}}`` whose keys are those of
``docs/rpc-api.md``'s server record; a key is only ever added (minor version)
or the major version changes. They are sent with oslo.messaging's
``messagingv2`` driver to ``[notifications] topics``.

Sending never fails the caller: a broker that is away loses the notification
and logs why (notifications are for monitoring, not for the cloud's state).
"""

from __future__ import annotations

import logging
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from compute_driver.rpc import transport

LOG = logging.getLogger(__name__)

PAYLOAD_VERSION = "1.0"

#: The instance fields a notification carries.
INSTANCE_FIELDS = (
    "uuid",
    "name",
    "project",
    "flavor",
    "image",
    "host",
    "vm_state",
    "task_state",
    "power_state",
    "fault",
)

#: vm_state reached -> event of a power change.
POWER_EVENTS = {
    "active": "instance.power_on",
    "stopped": "instance.power_off",
    "paused": "instance.pause",
    "suspended": "instance.suspend",
}


def payload(record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The versioned payload of a server record."""
    body: dict[str, Any] = {
        "version": PAYLOAD_VERSION,
        "instance": {k: record.get(k) for k in INSTANCE_FIELDS},
    }
    body.update(extra)
    return body


class Notifier:
    """Sends the scheduler's notifications (a no-op when disabled)."""

    def __init__(self, conf: cfg.ConfigOpts, publisher: str) -> None:
        self.enabled = conf.notifications.enabled
        self._notifier: messaging.Notifier | None = None
        if self.enabled:
            self._notifier = messaging.Notifier(
                messaging.get_notification_transport(
                    conf, allowed_remote_exmods=transport.ALLOWED_EXMODS
                ),
                publisher_id=publisher,
                driver="messagingv2",
                topics=list(conf.notifications.topics),
            )

    def info(self, event_type: str, record: dict[str, Any], **extra: Any) -> None:
        """Send ``event_type`` about the server ``record`` at INFO priority."""
        self._send("info", event_type, record, extra)

    def error(self, event_type: str, record: dict[str, Any], **extra: Any) -> None:
        """Send ``event_type`` about the server ``record`` at ERROR priority."""
        self._send("error", event_type, record, extra)

    def _send(self, priority: str, event_type: str, record: dict[str, Any], extra: dict) -> None:
        if self._notifier is None:
            return
        try:
            getattr(self._notifier, priority)({}, event_type, payload(record, **extra))
        except Exception:  # noqa: BLE001 - a lost notification must not fail the caller
            LOG.exception("Could not send %s about server %s", event_type, record.get("uuid"))
