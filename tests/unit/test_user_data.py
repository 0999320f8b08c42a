"""User data is bounded before it is read (issue 12, item 3): ``--user-data
/dev/zero``, a FIFO or a 100 MB file is refused by the client, saying the
limit, without reading the whole file."""

from __future__ import annotations

import os
import threading

import pytest

from compute_driver import client as client_mod
from compute_driver import exception

LIMIT = 64 * 1024


def _read_bytes() -> int:
    """Bytes this process has read so far (``rchar`` of /proc/self/io)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_dev_zero_is_refused_unread():
    with pytest.raises(exception.Invalid, match="not a regular file"):
        client_mod.read_user_data("/dev/zero")


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            client_mod.read_user_data(str(fifo))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "reading user data waited on a FIFO"
    assert isinstance(outcome[0], exception.Invalid)
    assert "not a regular file" in outcome[0].message


def test_a_large_file_is_refused_after_reading_past_the_limit_only(tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(100 * 1024 * 1024)
    before = _read_bytes()
    with pytest.raises(exception.Invalid) as info:
        client_mod.read_user_data(str(big))
    assert _read_bytes() - before < 1024 * 1024
    assert "65536 bytes (64 KiB)" in info.value.message


def test_user_data_at_the_limit_is_read_whole(tmp_path):
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * LIMIT)
    assert client_mod.read_user_data(str(exact)) == b"x" * LIMIT


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(exception.Invalid, match="cannot read --user-data"):
        client_mod.read_user_data(str(tmp_path / "none"))


def test_the_python_client_refuses_oversized_user_data_before_sending():
    class NoBus:
        def call(self, *args, **kwargs):
            raise AssertionError("nothing may be sent")

    client = client_mod.Client.__new__(client_mod.Client)
    client._api = NoBus()  # type: ignore[assignment]
    with pytest.raises(exception.Invalid, match="64 KiB"):
        client.create_server("s", "f", "i", user_data=b"x" * (LIMIT + 1))
