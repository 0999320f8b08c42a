"""The RPC context: typed, checked, and what every client call carries."""

from __future__ import annotations

import oslo_messaging as messaging
import pytest
from oslo_config import cfg

from compute_driver import client as client_mod
from compute_driver import exception
from compute_driver.rpc import context as context_mod
from compute_driver.rpc import transport
from compute_driver.rpc.context import RequestContext


def test_a_context_round_trips_and_each_call_has_its_own_request_id() -> None:
    context = RequestContext(project="a", user="alice@example.com", admin=False)
    assert RequestContext.from_wire(context.to_wire()) == context
    first, second = context.for_request(), context.for_request()
    assert first.request_id != second.request_id
    assert (first.project, first.user, first.admin) == ("a", "alice@example.com", False)


def test_the_global_request_id_of_an_upstream_api_is_carried() -> None:
    """Issue 16: oslo.context's global_request_id, the one key an upstream API adds."""
    gid = "req-12345678-1234-1234-1234-123456789abc"
    context = RequestContext.from_wire({"project": "a", "global_request_id": gid})
    assert context.global_request_id == gid
    assert context.for_request().global_request_id == gid
    assert RequestContext.from_wire(context.to_wire()) == context
    with pytest.raises(exception.InvalidContext):
        RequestContext.from_wire({"global_request_id": "req-1\nFAKE"})


@pytest.mark.parametrize("key", ["user", "padding", "request_id"])
def test_a_context_past_its_size_bound_is_refused_by_size(key) -> None:
    """Issue 16: the bound is the size, said in bytes; the value is never echoed."""
    wire = {"request_id": "req-1", key: "v" * (5 * 1024 * 1024)}
    with pytest.raises(exception.InvalidContext) as info:
        RequestContext.from_wire(wire)
    assert "%d allowed" % context_mod.MAX_CONTEXT_BYTES in info.value.message
    assert "vvv" not in info.value.message and len(info.value.message) < 200


def test_the_largest_valid_context_fits_the_bound() -> None:
    largest = {
        "request_id": "r" * 64,
        "global_request_id": "req-12345678-1234-1234-1234-123456789abc",
        "project": "p" * 64,
        "user": "u" * 64,
        "admin": False,
        "client_timeout": 86400,
    }
    assert set(largest) == set(context_mod.CONTEXT["properties"])
    RequestContext.from_wire(largest)


def test_oslo_messagings_own_key_is_accepted_and_dropped() -> None:
    context = RequestContext.from_wire({"project": "a", "client_timeout": 60})
    assert context.project == "a" and not context.admin


@pytest.mark.parametrize("wire", [None, {}, {"request_id": "req-1"}])
def test_an_empty_context_is_no_project_and_no_admin(wire) -> None:
    context = RequestContext.from_wire(wire)
    assert (context.project, context.admin) == (None, False)
    assert context.request_id


@pytest.mark.parametrize(
    "wire", [["project", "a"], {"admin": "true"}, {"project": ""}, {"is_admin": True}]
)
def test_a_malformed_context_is_refused(wire) -> None:
    with pytest.raises(exception.InvalidContext):
        RequestContext.from_wire(wire)  # type: ignore[arg-type]


def test_the_client_sends_who_it_acts_for(fresh_conf: cfg.ConfigOpts, monkeypatch) -> None:
    # NOTE: oslo.messaging's fake driver: nothing is sent, only the context is read.
    fake = messaging.get_rpc_transport(cfg.ConfigOpts(), url="fake:/")
    monkeypatch.setattr(transport, "get_transport", lambda conf: fake)
    fresh_conf([], default_config_files=[])
    upstream = client_mod.Client(fresh_conf)
    assert upstream.context.project is None and not upstream.context.admin
    view = upstream.for_project("b", user="bob")
    wire = view._api._context()
    assert (wire["project"], wire["user"], wire["admin"]) == ("b", "bob", False)
    assert upstream.context.project is None  # the view changed only itself
    admin = client_mod.Client(fresh_conf, project="ops", admin=True)._api._context()
    assert (admin["project"], admin["admin"]) == ("ops", True)
