"""Run a call that must end, and fail the test if it hangs, without timing it.

A test of "fails within its timeout" proves the timeout by the error it
gets (the message names the configured seconds), not by the wall time it
took, which moves with the host's load. What remains is a guard against a
hang: the call runs on a thread of its own and the test fails when it has
neither returned nor raised after a bound many times the timeout under test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

#: Seconds after which a call counts as hung: generous, for a loaded host.
HANG_SECONDS = 60.0


def call_or_fail_on_hang(func: Callable[[], T], seconds: float = HANG_SECONDS) -> T:
    """``func()``'s result or exception; the test fails if it takes longer than ``seconds``.

    NOTE: a hung call's thread is a daemon and is left behind: there is no
    safe way to stop it, and the test has failed anyway.
    """
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as it is
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="bounded-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail("%r neither returned nor raised within %g s: it hangs" % (func, seconds))
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]
