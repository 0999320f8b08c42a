"""What the two services share: start-up, logging, periodic tasks, shutdown."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn, Protocol

import oslo_messaging as messaging
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
    try:
        oslo_log.setup(conf, "compute-driver")
    except (OSError, ValueError) as exc:  # a log file or directory we cannot write
        print("%s: configuration error: logging: %s" % (prog, _one_line(exc)), file=sys.stderr)
        sys.exit(2)
    from compute_driver.rpc import endpoint

    # No request, however large, writes more than a bounded line to the log.
    endpoint.bound_log_records()
    for line in config.unknown_options(conf):
        LOG.warning("%s", line)
    return conf


def check_state_path(conf: cfg.ConfigOpts) -> None:
    """``[DEFAULT] state_path`` exists (or can be made) and this service can write there.

    :raises InvalidConfig: naming the path and why.
    """
    path = conf.state_path
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    else:
        if os.access(path, os.W_OK | os.X_OK):
            return
        reason = "not writable by this service (uid %d)" % os.getuid()
    raise exception.InvalidConfig(
        reason="%s: [DEFAULT] state_path = %r is unusable: %s"
        % (config.option_location(conf, "DEFAULT", "state_path"), path, reason)
    )


def check_transport(conf: cfg.ConfigOpts) -> None:
    """The transport URL is well formed and its broker lets us in.

    NOTE: oslo.messaging alone would start the service and retry forever in
    the background, logging a line per retry; a dead broker, a wrong password
    or vhost is better said once, at start.

    :raises InvalidConfig: the URL is malformed or names no installed driver.
    :raises MessagingError: no broker of the URL accepted us (after
        ``[rpc] connection_retries`` retries).
    """
    from compute_driver.rpc import transport

    config.check_transport_url(conf)
    try:
        transport.get_transport(conf)
    except messaging.DriverLoadFailure as exc:  # e.g. kafka without its library
        raise exception.InvalidConfig(
            reason="%s: [DEFAULT] transport_url: %s"
            % (config.option_location(conf, "DEFAULT", "transport_url"), config.masked(conf, exc))
        ) from exc
    transport.check_broker(conf, conf.rpc.connection_retries)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return "%s: %s" % (type(exc).__name__, text[0]) if text else type(exc).__name__


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
    prog: str,
    argv: Sequence[str] | None,
    factory: Callable[[cfg.ConfigOpts], Service],
    checks: Sequence[Callable[[cfg.ConfigOpts], None]] = (),
) -> None:
    """Main loop of a service: configure, check, build, start, wait for a signal, stop.

    :param checks: the service's own start-up checks of its configuration,
        run after state_path's and before the transport's and its broker's.

    Exits 2 with one line for a configuration error, 1 when the service
    cannot start (its broker, hypervisor, storage or database is unusable),
    0 after a clean stop. Systemd restarts on 1, not on 2.
    """
    from compute_driver.rpc import transport

    conf = prepare(prog, argv)
    svc: Service | None = None
    try:
        for check in (check_state_path, *checks, check_transport):
            check(conf)
        svc = factory(conf)
        svc.start()
    except exception.InvalidConfig as exc:
        _fail(conf, prog, "configuration error: %s" % exc, 2, hard=svc is not None)
    except exception.ComputeDriverError as exc:
        _fail(conf, prog, "cannot start: %s" % exc, 1, hard=svc is not None)
    except Exception as exc:  # noqa: BLE001 - any other failure at start is one line too
        # NOTE: the traceback is for a developer, at debug level.
        LOG.debug("%s failed to start", prog, exc_info=True)
        _fail(conf, prog, "cannot start: %s" % _one_line(exc), 1, hard=svc is not None)
    assert svc is not None
    try:
        wait_for_signal()
    finally:
        svc.stop()
        transport.cleanup()
    sys.exit(0)


def _fail(conf: cfg.ConfigOpts, prog: str, message: str, status: int, hard: bool) -> NoReturn:
    """One line on stderr (and in the log file, if there is one), then exit.

    :param hard: the service was built: exit at once, because a half-started
        service may hold non-daemon threads (an RPC server's pool) that a
        plain exit would wait for.
    """
    print("%s: %s" % (prog, message), file=sys.stderr)
    if conf.log_file or conf.log_dir:
        LOG.error("%s", message)
    if hard:
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


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
