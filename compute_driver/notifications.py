"""Versioned notifications about servers, on their own topic of the bus.

Every notification has an ``event_type`` (``instance.create.start``, ...) and
a payload ``{"version": "1.0", "instance": {...}}`` whose keys are those of
``docs/rpc-api.md``'s server record; a key is only ever added (minor version)
or the major version changes. They are sent with oslo.messaging's
``messagingv2`` driver to ``[notifications] topics``.

Sending never fails nor holds up the caller: a notification goes into a
bounded queue in this process and one thread sends the queue in order. While
the broker is away that thread waits for it (oslo's notifier retries for
ever) and the queue keeps what the requests notify meanwhile; it is sent
when the broker is back. Only a queue that is full drops notifications,
said in one log line when it happens and once more, with the number lost,
when sending resumes.

NOTE: a queue, not a bounded retry in the caller: a consumer follows a
server's life by its events, and a broker outage of a minute should not cut
a hole in every life it crosses; while the caller, an RPC worker of the
scheduler, must never wait for the broker (it did, for as long as the
broker was away: oslo's Notifier has no per-call timeout).
"""

from __future__ import annotations

import collections
import logging
import threading
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


#: Notifications kept while the broker is away; more are dropped (and counted).
#: NOTE: about 1 KiB each: a few MiB at most, and two hours of 1 create/s.
QUEUE_LENGTH = 10000


class Notifier:
    """Sends the scheduler's notifications (a no-op when disabled).

    :meth:`info` and :meth:`error` only queue; a daemon thread sends.
    """

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        publisher: str,
        queue_length: int = QUEUE_LENGTH,
    ) -> None:
        """:param queue_length: notifications kept while they cannot be sent."""
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
                # NOTE: for ever, in our sender thread only: see the module's NOTE.
                retry=-1,
            )
        self._queue_length = queue_length
        self._queue: collections.deque[tuple[str, str, dict[str, Any]]] = collections.deque()
        self._ready = threading.Condition()
        #: Notifications being sent or queued (the queue and the one in hand).
        self._pending = 0
        self._dropped = 0
        self._thread: threading.Thread | None = None

    def info(self, event_type: str, record: dict[str, Any], **extra: Any) -> None:
        """Send ``event_type`` about the server ``record`` at INFO priority."""
        self._send("info", event_type, record, extra)

    def error(self, event_type: str, record: dict[str, Any], **extra: Any) -> None:
        """Send ``event_type`` about the server ``record`` at ERROR priority."""
        self._send("error", event_type, record, extra)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until everything queued is sent.

        :returns: whether the queue is empty (False: the broker is away).
        """
        with self._ready:
            return self._ready.wait_for(lambda: self._pending == 0, timeout)

    def _send(self, priority: str, event_type: str, record: dict[str, Any], extra: dict) -> None:
        if self._notifier is None:
            return
        # NOTE: the payload is built now: the record may change after we return.
        body = payload(record, **extra)
        with self._ready:
            if self._pending >= self._queue_length:
                self._dropped += 1
                if self._dropped == 1:
                    LOG.error(
                        "Notification queue full (%d waiting for the broker): dropping %s "
                        "about server %s and the next ones until it drains",
                        self._pending,
                        event_type,
                        record.get("uuid"),
                    )
                return
            self._queue.append((priority, event_type, body))
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._send_queued, name="notifications", daemon=True
                )
                self._thread.start()
            self._ready.notify_all()

    def _send_queued(self) -> None:
        """The sender thread: send the queue in order, for ever."""
        assert self._notifier is not None
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._queue))
                priority, event_type, body = self._queue.popleft()
            try:
                # NOTE: blocks while the broker is away (retry=-1); oslo logs
                # and swallows any other failure of this one notification.
                getattr(self._notifier, priority)({}, event_type, body)
            except Exception:  # noqa: BLE001 - the sender must outlive one bad notification
                LOG.exception(
                    "Could not send %s about server %s", event_type, body["instance"].get("uuid")
                )
            finally:
                with self._ready:
                    self._pending -= 1
                    # NOTE: counted until a send returns, i.e. the broker is back.
                    dropped, self._dropped = self._dropped, 0
                    self._ready.notify_all()
            if dropped:
                LOG.error("%d notifications were dropped while the broker was away", dropped)
