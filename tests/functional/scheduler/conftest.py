"""Fixtures of the scheduler-at-scale tests: RabbitMQ must answer; PostgreSQL is started here.

These tests need no libvirtd: every simulated host is a ``compute-agent``
process on libvirt's in-process ``test:///default`` driver (see
``sim_cloud.py``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from tests.functional.scheduler.postgres import PostgresCluster, PostgresMissing, running_postgres


def pytest_configure(config: pytest.Config) -> None:
    # NOTE: the client runs in the test process; oslo.messaging imports
    # oslo.service, which imports eventlet and warns (we never monkey-patch).
    config.addinivalue_line("filterwarnings", "ignore:(?s).*Eventlet is deprecated")
    config.addinivalue_line("filterwarnings", r"ignore::DeprecationWarning:oslo_\w+")


@pytest.fixture(autouse=True)
def _require_rabbitmq() -> None:
    if os.geteuid() != 0:
        pytest.fail("the scheduler functional tests run as root (rabbitmqctl); use `make test`")
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError:
        pytest.fail("RabbitMQ is not listening on 127.0.0.1:5672; run tools/start-services.sh")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster for the session (fails, never skips, when not installed)."""
    try:
        with running_postgres() as cluster:
            yield cluster
    except PostgresMissing as exc:
        pytest.fail(str(exc))
