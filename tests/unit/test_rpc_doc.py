"""docs/rpc-api.md is generated from the schemas and must stay in sync."""

import os

from compute_driver.rpc import apidoc

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "rpc-api.md")


def test_rpc_doc_is_in_sync_with_the_schemas() -> None:
    with open(DOC) as f:
        checked_in = f.read()
    assert checked_in == apidoc.render(), (
        "docs/rpc-api.md is out of date: run "
        "`.venv/bin/python -m compute_driver.rpc.apidoc > docs/rpc-api.md`"
    )


def test_every_method_is_documented_as_call_or_cast() -> None:
    text = apidoc.render()
    for name in ("create_server", "build_instance", "report_host", "get_console_output"):
        assert "### `%s`" % name in text
    assert "### `build_instance` (cast)" in text and "### `create_server` (call, project)" in text


def test_every_scheduler_method_says_who_may_call_it() -> None:
    text = apidoc.render()
    assert "### `create_flavor` (call, admin)" in text
    assert "### `ping` (call, open)" in text
    # NOTE: the agents' reports are another API (topic agent_reports), not scoped.
    assert "### `report_host` (cast)" in text
    assert "## Request context and project scope" in text
