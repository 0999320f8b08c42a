"""What the two services share: start-up, logging, periodic tasks, shutdown."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from oslo_config import cfg
from oslo_log import log as oslo_log

from compute_driver import config, exception

LOG = logging.getLogger(__name__)


def prepare(prog: str, argv: Sequence[str] | None = None) -> cfg.ConfigOpts:
    """Parse and check the configuration, then set up logging.

    Exits with status 2 and one line on stderr when the configuration is bad.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        conf = config.load(args, prog)
    except exception.InvalidConfig as exc:
        print("%s: configuration error: %s" % (prog, exc), file=sys.stderr)
        sys.exit(2)
    oslo_log.setup(conf, "compute-driver")
    from compute_driver.rpc import endpoint

    # No request, however large, writes more than a bounded line to the log.
    endpoint.bound_log_records()
    return conf


class Periodic(threading.Thread):
    """Runs ``func`` every ``interval`` seconds until stopped; errors are logged, never fatal."""

    def __init__(self, name: str, interval: float, func: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.func = func
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.func()
            except Exception:  # noqa: BLE001 - a periodic task must survive one bad run
                LOG.exception("Periodic task %s failed", self.name)
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()


class Service(Protocol):
    """What :func:`run` drives: a service that starts and stops."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def run(
    prog: str, argv: Sequence[str] | None, factory: Callable[[cfg.ConfigOpts], Service]
) -> None:
    """Main loop of a service: configure, build, start, wait for a signal, stop.

    Exits 2 with one line for a configuration error, 1 when the service
    cannot start (its hypervisor or database is unusable), 0 after a clean stop.
    """
    from compute_driver.rpc import transport

    conf = prepare(prog, argv)
    try:
        svc = factory(conf)
    except exception.InvalidConfig as exc:
        print("%s: configuration error: %s" % (prog, exc), file=sys.stderr)
        sys.exit(2)
    except exception.ComputeDriverError as exc:
        print("%s: cannot start: %s" % (prog, exc), file=sys.stderr)
        sys.exit(1)
    svc.start()
    try:
        wait_for_signal()
    finally:
        svc.stop()
        transport.cleanup()
    sys.exit(0)


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT."""
    done = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        LOG.info("Received signal %d, stopping", signum)
        done.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not done.wait(1.0):
        pass
