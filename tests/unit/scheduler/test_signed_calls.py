"""Public scheduler calls are signed with the client key (issue 12: no bus
client acts as a host).

An agent's broker credential may publish to the default exchange (it answers
the scheduler's calls), which delivers to the ``scheduler`` queue too: with
``[agent_reports] secret`` set, the scheduler runs only calls signed with the
client key over their context, which no agent holds.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver import exception
from compute_driver.rpc import report_signing
from compute_driver.rpc.scheduler_api import SchedulerAPI
from tests.unit.scheduler import test_project_scope as matrix
from tests.unit.scheduler.test_project_scope import HOST, World, call

template = matrix.template
world = matrix.world

SECRET = "scheduler-secret"
ADMIN = {"request_id": "req-admin", "admin": True, "user": "operator"}


@pytest.fixture
def secured(world: World, fresh_conf: cfg.ConfigOpts) -> World:
    fresh_conf.set_override("secret", SECRET, "agent_reports")
    return world


def _network() -> dict[str, Any]:
    return {
        "uuid": str(uuidlib.uuid4()),
        "name": "n-" + uuidlib.uuid4().hex[:6],
        "cidr": "10.5.0.0/24",
        "type": "vxlan",
        "project": "b",
    }


def _names(world: World) -> list[str]:
    return [
        n["name"]
        for n in call(world.manager, ADMIN, "list_networks", **_signed(ADMIN, "list_networks", {}))
    ]


def _signed(context: dict, method: str, payload: dict, key: str | None = None) -> dict:
    key = report_signing.client_key(SECRET) if key is None else key
    return report_signing.sign_call(key, method, dict(context), payload)


def test_a_call_signed_with_the_client_key_runs(secured: World) -> None:
    args = _network()
    made = call(
        secured.manager,
        ADMIN,
        "create_network",
        **_signed(ADMIN, "create_network", args),
    )
    assert made["name"] == args["name"]


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda args: args, id="unsigned"),
        pytest.param(
            lambda args: _signed(
                ADMIN, "create_network", args, report_signing.host_key(SECRET, HOST)
            ),
            id="agent-key",
        ),
        pytest.param(
            lambda args: _signed(dict(ADMIN, admin=False, project="b"), "create_network", args),
            id="signed-as-project",
        ),
    ],
)
def test_an_agent_cannot_call_as_admin(secured: World, forge: Any) -> None:
    args = _network()
    with pytest.raises(exception.RequestRefused) as info:
        call(secured.manager, ADMIN, "create_network", **forge(args))
    assert info.value.code == "request_refused"
    assert args["name"] not in _names(secured)


def test_without_a_secret_calls_are_not_checked(world: World) -> None:
    assert call(world.manager, ADMIN, "ping")["service"] == "compute-scheduler"


def test_the_client_signs_with_the_configured_key(fresh_conf: cfg.ConfigOpts) -> None:
    key = report_signing.client_key(SECRET)
    fresh_conf.set_override("key", key, "client")
    api = SchedulerAPI(fresh_conf)
    context = {"request_id": "req-1", "admin": True}
    signed = api._outgoing("ping", context, {})
    report_signing.verify_call(SECRET, "ping", context, signed, "s0")
    fresh_conf.clear_override("key", "client")
    assert SchedulerAPI(fresh_conf)._outgoing("ping", context, {}) == {}
