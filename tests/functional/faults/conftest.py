"""The standing fault suite: fixtures (a private broker to stop, a private PostgreSQL).

Each scenario injects one fault into simulated hosts (``compute-agent``
processes on ``test:///default``, see tests/functional/scheduler/sim_cloud.py)
and real schedulers, then checks the invariants after it and prints its
figures as one JSON line (``FAULT-FIGURES {...}``). The broker a scenario
stops is a private RabbitMQ node, never the shared one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from tests.functional import private_rabbit
from tests.functional.scheduler.conftest import postgres, pytest_configure  # noqa: F401


@pytest.fixture(scope="session")
def broker() -> Iterator[private_rabbit.PrivateRabbit]:
    """A private RabbitMQ node for the session (scenarios stop and start its broker)."""
    why = private_rabbit.available()
    if why is not None:
        pytest.fail("the fault suite %s" % why)
    workdir = tempfile.mkdtemp(prefix="cd-rabbit-faults-")
    os.chmod(workdir, 0o700)
    node = private_rabbit.PrivateRabbit(workdir)
    try:
        node.start()
        yield node
    finally:
        node.remove()
