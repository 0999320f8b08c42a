"""Hostile message bodies on the public topic (the attack branch), real broker.

oslo.messaging decodes a message before any code of ours sees it; a body it
cannot decode (JSON nested deeper than Python's recursion limit, or no JSON
at all) was logged by the scheduler as a 40-line traceback: a caller's
mistake, so one line (issue 12, item 9). The scheduler keeps answering.
"""

from __future__ import annotations

import os
import uuid as uuidlib

import pytest
from cloud_env import Cloud
from test_bus_permissions import _publish, _url


def _message(args: str) -> str:
    return (
        '{"method": "list_servers", "args": %s, "namespace": null, "version": "1.0", '
        '"_unique_id": "%s", "_context_request_id": "req-%s", "_context_admin": false, '
        '"_context_project": "p1"}' % (args, uuidlib.uuid4().hex, uuidlib.uuid4())
    )


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_message('{"project": %s}' % ("[" * 5000 + "]" * 5000)), id="nested-5000"),
        pytest.param(_message('{"project": %s}' % ("[" * 200000 + "]" * 200000)), id="nested-2e5"),
        pytest.param("this is not JSON \x1b[2J", id="not-json"),
    ],
)
def test_an_undecodable_message_is_one_log_line(cloud: Cloud, text: str) -> None:
    before = os.path.getsize(cloud.log_path("compute-scheduler"))
    _publish(_url(cloud, "client"), "scheduler", body={"oslo.version": "2.0", "oslo.message": text})
    # The scheduler takes messages in turn: once the next call is answered,
    # the hostile one has been logged.
    assert isinstance(cloud.ok("flavor", "list"), list)
    with open(cloud.log_path("compute-scheduler"), "rb") as f:
        f.seek(before)
        grown = f.read().decode(errors="replace")
    assert "Traceback" not in grown, grown[-2000:]
    assert "\x1b" not in grown
    refusals = [line for line in grown.splitlines() if "Failed to process message" in line]
    assert len(refusals) == 1, grown[-2000:]
