"""computectl and the operator's terminal: what guests and tenants wrote is shown, not obeyed.

Also the command-line mistakes of issue 12 item 17: ``server group
show|delete``, a closed pipe, and timeouts that are not positive.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from oslo_config import cfg

from compute_driver import client as client_mod
from compute_driver import exception
from compute_driver.cli import main as cli
from compute_driver.cli import output

#: What a hostile guest prints on its console: a window title (OSC ... BEL),
#: clear screen, cursor home, a CR that overwrites the line, C1 CSI.
HOSTILE_CONSOLE = "\x1b]0;owned\x07\x1b[2J\x1b[Hboot ok\r\nlogin: \rfake\x9b31m\n"
#: A host disable reason that fakes a table row.
HOSTILE_REASON = "maintenance\x1b[1A\n| enabled        | yes |\r"

HOST = {
    "name": "compute-1",
    "state": "up",
    "enabled": False,
    "disabled_reason": HOSTILE_REASON,
    "capabilities": {"hypervisor": "QEMU\x1b[8m"},
}


class Answers:
    """A stand-in client: each method returns ``Answers.values[name]`` or raises ``error``."""

    values: dict[str, Any] = {}
    error: BaseException | None = None
    calls: list[tuple[str, tuple]] = []

    def __init__(self, conf: cfg.ConfigOpts, timeout: int | None = None, **who: Any) -> None:
        self.timeout = timeout

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any, **kwargs: Any) -> Any:
            Answers.calls.append((name, args))
            if Answers.error is not None:
                raise Answers.error
            return Answers.values.get(name, {"name": "x"})

        return method


@pytest.fixture
def run(monkeypatch, tmp_path, capsys):
    """``run(*argv)`` -> (status, stdout, stderr) of computectl against :class:`Answers`."""
    monkeypatch.setattr(client_mod, "Client", Answers)
    monkeypatch.setattr(Answers, "values", {"show_host": HOST, "console_log": HOSTILE_CONSOLE})
    monkeypatch.setattr(Answers, "error", None)
    monkeypatch.setattr(Answers, "calls", [])
    # NOTE: output.emit binds its default stream when called; capsys swaps
    # sys.stdout per test, so pass the current one.
    emit = output.emit
    monkeypatch.setattr(
        output, "emit", lambda result, fmt, columns=None: emit(result, fmt, columns, out=sys.stdout)
    )
    empty = tmp_path / "empty.conf"
    empty.write_text("")

    def call(*argv: str) -> tuple[int, str, str]:
        status = cli.main(["--config-file", str(empty), *argv])
        out, err = capsys.readouterr()
        return status, out, err

    yield call
    cfg.CONF.reset()
    cfg.CONF.clear()


def _no_controls(text: str) -> None:
    bad = [c for c in text if not c.isprintable() and c != "\n"]
    assert not bad, "control characters reached the terminal: %r" % bad


# --- item 7: escapes -------------------------------------------------------------


def test_host_show_escapes_a_reason_that_fakes_rows(run):
    status, out, _ = run("host", "show", "compute-1")
    assert status == 0
    _no_controls(out)
    lines = out.splitlines()
    # border, header, border, one line per field, border: no extra row
    assert len(lines) == 4 + len(HOST)
    assert "maintenance\\x1b[1A\\x0a| enabled        | yes |\\x0d" in out
    assert "QEMU\\x1b[8m" in out


def test_table_escapes_cells_and_headers():
    import io

    stream = io.StringIO()
    output.table(
        [{"name\x1b": "a\nb", "x": ["\x07", {"k\r": "\u202e"}]}], ["name\x1b", "x"], stream
    )
    _no_controls(stream.getvalue())
    assert "a\\x0ab" in stream.getvalue() and "\\u202e" in stream.getvalue()
    assert len(stream.getvalue().splitlines()) == 5


def test_console_log_escapes_terminal_sequences(run):
    status, out, _ = run("server", "console-log", "web")
    assert status == 0
    _no_controls(out)
    assert out == ("\\x1b]0;owned\\x07\\x1b[2J\\x1b[Hboot ok\nlogin: \\x0dfake\\x9b31m\n\n")


def test_console_log_json_is_escaped_by_json(run):
    status, out, _ = run("-f", "json", "server", "console-log", "web")
    assert status == 0
    _no_controls(out)


def test_console_log_raw_refuses_a_terminal(run, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    status, out, err = run("server", "console-log", "web", "--raw")
    assert status == 2
    assert out == ""
    assert err.startswith("computectl: invalid: ") and len(err.splitlines()) == 1
    assert Answers.calls == []


def test_console_log_raw_to_a_pipe_is_the_log_as_it_is(run, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    status, out, _ = run("server", "console-log", "web", "--raw")
    assert status == 0
    assert out == HOSTILE_CONSOLE


def test_console_log_output_file_is_the_log_as_it_is(run, tmp_path):
    target = tmp_path / "console.log"
    status, out, _ = run("server", "console-log", "web", "--output", str(target))
    assert status == 0
    assert out == ""
    assert target.read_bytes().decode() == HOSTILE_CONSOLE


def test_console_log_output_to_a_missing_directory_is_one_line(run, tmp_path):
    status, _, err = run(
        "server", "console-log", "web", "--output", str(tmp_path / "no" / "such" / "file")
    )
    assert status == 2
    assert err.startswith("computectl: invalid: Invalid input: cannot write --output ")
    assert len(err.splitlines()) == 1


def test_error_message_with_escapes_stays_one_escaped_line(run):
    Answers.error = exception.BuildFailed(instance="web", reason="\x1b[31mred\nsecond line\r")
    status, out, err = run("server", "show", "web")
    assert status == 1
    assert out == ""
    _no_controls(err)
    assert len(err.splitlines()) == 1
    assert "\\x1b[31mred\\x0asecond line\\x0d" in err


def test_progress_escapes_what_it_shows():
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = output.Progress(stream)
    progress.update("Building web\x1b]0;t\x07: spawning")
    assert "\\x1b]0;t\\x07" in stream.getvalue()
    assert stream.getvalue().count("\x1b") == 1  # our own "erase line" only


# --- item 17: the command line ----------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "method"), [("show", "show_server_group"), ("delete", "delete_server_group")]
)
def test_server_group_show_and_delete_name_the_group(run, verb, method):
    status, _, err = run("server", "group", verb, "g1")
    assert status == 0, err
    assert Answers.calls == [(method, ("g1",))]


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
@pytest.mark.parametrize(
    "argv",
    [
        ["--timeout", "{}", "host", "list"],
        ["server", "console-log", "web", "--lines", "{}"],
        ["server", "start", "web", "--wait", "--wait-timeout", "{}"],
        ["server", "create", "w", "--flavor", "f", "--image", "i", "--count", "{}"],
    ],
    ids=lambda a: a[0] if a[0].startswith("-") else a[1],
)
def test_counts_and_timeouts_must_be_positive(run, capsys, argv, value):
    with pytest.raises(SystemExit) as stop:
        run(*[a.format(value) for a in argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "integer" in err and "AMQP" not in err
    assert Answers.calls == []


#: A computectl whose client answers ``flavor list`` with many flavors.
MANY_FLAVORS = textwrap.dedent(
    """
    import sys
    from compute_driver import client
    from compute_driver.cli import main

    class Many:
        def __init__(self, conf, timeout=None, **who):
            pass

        def list_flavors(self):
            return [
                {"name": "f%05d" % i, "vcpus": 1, "memory_mb": 64, "root_gb": 1}
                for i in range(20000)
            ]

    client.Client = Many
    sys.exit(main.main(sys.argv[1:]))
    """
)


def test_closed_pipe_ends_quietly(tmp_path):
    """``computectl flavor list | head -1``: no BrokenPipeError, status 141 like SIGPIPE."""
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-c", MANY_FLAVORS, "--config-file", str(empty), "flavor", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    # NOTE: 20,000 rows are far more than a pipe buffer holds: the writer is
    # still writing when the reader goes away.
    proc.stdout.close()
    status = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert first.startswith(b"+-")
    assert "BrokenPipeError" not in err and "Traceback" not in err, err
    assert err == ""
    assert status == cli.EXIT_BROKEN_PIPE
