"""The client sides: one Python method per remote method, each checking its
payload against the schema before anything is sent, and one signing hook."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver import client as client_mod
from compute_driver import exception
from compute_driver.rpc import report_signing, schemas
from compute_driver.rpc.agent_reports_api import AgentReportsAPI
from compute_driver.rpc.client import RPCClientBase
from compute_driver.rpc.compute_api import ComputeAPI
from compute_driver.rpc.scheduler_api import SchedulerAPI

SECRET = "s3cret"
UUID = "0b0e9a5c-3f1d-4f53-9d7e-1c9a4f3e2b10"
#: Client methods named otherwise than the remote method they send.
RENAMED = {"set_host_enabled_automatically": "set_host_enabled"}
#: Convenience methods that send one of several remote methods by name.
DISPATCHERS = {"instance_action", "snapshot_instance"}


def _methods(api: type[RPCClientBase]) -> dict[str, inspect.Signature]:
    own = {
        name: inspect.signature(func)
        for name, func in vars(api).items()
        if inspect.isfunction(func) and not name.startswith("_") and name not in DISPATCHERS
    }
    return {RENAMED.get(name, name): sig for name, sig in own.items()}


@pytest.mark.parametrize(
    "api, methods, routed",
    [
        (SchedulerAPI, schemas.SCHEDULER_METHODS, ()),
        (ComputeAPI, schemas.COMPUTE_METHODS, ("host",)),
        (AgentReportsAPI, schemas.REPORT_METHODS, ()),
    ],
    ids=["scheduler", "compute", "agent_reports"],
)
def test_one_python_method_per_remote_method(
    api: type[RPCClientBase], methods: dict[str, Any], routed: tuple[str, ...]
) -> None:
    ours = _methods(api)
    assert set(ours) == set(methods)
    for name, signature in ours.items():
        params = {
            p.name: p for p in signature.parameters.values() if p.name not in ("self", *routed)
        }
        schema = methods[name]
        fields = set(schema["properties"]) - {"signature"}
        assert set(params) == fields, name
        required = {p for p, param in params.items() if param.default is inspect.Parameter.empty}
        assert required == set(schema["required"]), name


def test_the_scheduler_client_has_no_generic_call() -> None:
    assert not hasattr(SchedulerAPI, "call")


def test_a_scheduler_call_is_checked_before_it_is_sent(fresh_conf: cfg.ConfigOpts) -> None:
    api = SchedulerAPI(fresh_conf, timeout=1)
    with pytest.raises(exception.InvalidPayload) as info:
        api.show_server("web-1\nFAKE LOG LINE")
    assert info.value.code == "invalid_payload"
    assert "scheduler.show_server" in str(info.value)
    with pytest.raises(exception.InvalidPayload):
        api.create_server(UUID, "web-1", "m1", "cirros", networks=["n"] * 17)


def test_a_compute_cast_is_checked_before_it_is_sent(fresh_conf: cfg.ConfigOpts) -> None:
    api = ComputeAPI(fresh_conf, timeout=1)
    with pytest.raises(exception.InvalidPayload):
        api.stop_instance("h0", "not-a-uuid")
    with pytest.raises(exception.InvalidPayload):
        api.build_instance("h0", {"uuid": UUID})
    with pytest.raises(exception.InvalidPayload):
        api.instance_action("h0", "../etc", "pause_instance")


def test_a_report_is_checked_before_it_is_sent(fresh_conf: cfg.ConfigOpts) -> None:
    api = AgentReportsAPI(fresh_conf, timeout=1)
    with pytest.raises(exception.InvalidPayload):
        api.instance_power_changed("h0", UUID, "on fire")


def test_the_client_sends_through_the_typed_methods(fresh_conf: cfg.ConfigOpts) -> None:
    client = client_mod.Client(fresh_conf, timeout=1, admin=True)
    with pytest.raises(exception.InvalidPayload):
        client.set_aggregate("agg", properties={"BAD KEY": "x"})


def test_one_signing_hook_for_every_client() -> None:
    for api in (SchedulerAPI, ComputeAPI, AgentReportsAPI):
        for name in ("_outgoing", "_call", "_cast", "_request"):
            assert getattr(api, name) is getattr(RPCClientBase, name), (api, name)


def _signed(api: RPCClientBase, method: str, payload: dict[str, Any], host: str | None) -> Any:
    context = api._context()
    return context, api._outgoing(method, context, payload, host)


@pytest.mark.parametrize(
    "make, check",
    [
        (
            lambda conf: SchedulerAPI(conf),
            lambda ctx, signed: report_signing.verify_call(SECRET, "ping", ctx, signed, "s0"),
        ),
        (
            lambda conf: ComputeAPI(conf),
            lambda ctx, signed: report_signing.verify_request(
                report_signing.host_key(SECRET, "h0"), "h0", "ping", signed
            ),
        ),
        (
            lambda conf: AgentReportsAPI(conf),
            lambda ctx, signed: report_signing.verify(SECRET, "ping", signed),
        ),
    ],
    ids=["client key", "host key of the target", "own host key"],
)
def test_each_client_signs_through_the_hook(
    fresh_conf: cfg.ConfigOpts,
    make: Callable[[cfg.ConfigOpts], RPCClientBase],
    check: Callable[[Any, Any], None],
) -> None:
    fresh_conf.set_override("secret", SECRET, "agent_reports")
    fresh_conf.set_override("host", "h0")
    payload = {"host": "h0"}
    context, signed = _signed(make(fresh_conf), "ping", payload, "h0")
    assert signed["signature"]
    check(context, signed)
    fresh_conf.clear_override("secret", "agent_reports")
    context, unsigned = _signed(make(fresh_conf), "ping", payload, "h0")
    assert unsigned == payload
