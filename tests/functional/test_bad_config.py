"""The real services started with bad configuration (issue 12, item 16).

Each case starts ``compute-scheduler`` or ``compute-agent`` as an operator
would, and expects one line on stderr naming what is wrong, a non-zero exit
status (2: fix the file; 1: the environment, systemd retries) and no
traceback: a dead broker (a port where nothing listens), a wrong password or
vhost, malformed URLs, a directory or non-UTF-8 text as the config file, an
unusable state_path, a mistyped SQLite directory, unknown plugins, an empty
VNI range, an unreachable Ceph monitor or iSCSI portal. Typos in option and
section names do not stop a service: each is one warning line at start.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_env import BIN, TRANSPORT_URL, add_vhost, delete_vhost, require_services

SCHEDULER, AGENT = "compute-scheduler", "compute-agent"
#: The base file: sound, but for what a case changes.
BASE = """\
[DEFAULT]
host = cfg-{tag}
state_path = {state}
transport_url = {url}

[database]
connection = sqlite:///{state}/scheduler.sqlite

[agent]
network_plugins = noop

[storage]
backends = dir
root_backend = dir
"""


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    require_services()
    name = "cdft-cfg-" + uuid.uuid4().hex[:8]
    add_vhost(name)
    yield name
    delete_vhost(name)


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens: bound, never listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def base(tmp_path: Path, vhost: str) -> dict[str, str]:
    state = tmp_path / "state"
    state.mkdir()
    return {
        "tag": uuid.uuid4().hex[:8],
        "state": str(state),
        "url": TRANSPORT_URL.rstrip("/") + "/" + vhost,
    }


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "compute-driver.conf"
    path.write_text(text)
    return str(path)


def _start(program: str, config_file: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(BIN, program), "--config-file", config_file],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line(done: subprocess.CompletedProcess, program: str, status: int) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert done.returncode == status, done.stderr
    assert lines[0].startswith(program + ": ")
    return lines[0]


@pytest.mark.parametrize("program", [SCHEDULER, AGENT])
def test_a_dead_broker_is_one_line_and_status_1(tmp_path, base, dead_port, program) -> None:
    base["url"] = "rabbit://guest:guest@127.0.0.1:%d/" % dead_port
    done = _start(program, _write(tmp_path, BASE.format(**base)))
    line = _one_line(done, program, 1)
    assert "cannot start" in line and "127.0.0.1:%d" % dead_port in line
    assert "Connection refused" in line


@pytest.mark.parametrize("program", [SCHEDULER, AGENT])
@pytest.mark.parametrize(
    "url",
    [
        "rabbit://guest:Wr0ngPassw0rd@127.0.0.1:5672/{vhost}",
        "rabbit://guest:guest@127.0.0.1:5672/cdft-no-such-vhost",
    ],
    ids=["wrong-password", "unknown-vhost"],
)
def test_a_refused_login_is_one_line_and_status_1(tmp_path, base, vhost, url, program) -> None:
    base["url"] = url.format(vhost=vhost)
    done = _start(program, _write(tmp_path, BASE.format(**base)))
    line = _one_line(done, program, 1)
    assert "cannot start: Message bus error" in line
    assert "Wr0ngPassw0rd" not in done.stderr


@pytest.mark.parametrize("program", [SCHEDULER, AGENT])
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("foo://guest:S3cretpw@127.0.0.1/", "no driver 'foo'"),
        ("rabbit://guest:S3cretpw@127.0.0.1:port/", "invalid literal for int"),
        ("rabbit://guest:S3cretpw@[::1/", "Invalid IPv6 URL"),
    ],
)
def test_a_malformed_transport_url_is_one_line_and_status_2(
    tmp_path, base, url, words, program
) -> None:
    base["url"] = url
    done = _start(program, _write(tmp_path, BASE.format(**base)))
    line = _one_line(done, program, 2)
    assert "[DEFAULT] transport_url is invalid" in line and words in line
    assert "S3cretpw" not in done.stderr


@pytest.mark.parametrize("program", [SCHEDULER, AGENT])
def test_a_directory_or_non_utf8_file_as_config_is_one_line(tmp_path, program) -> None:
    line = _one_line(_start(program, str(tmp_path)), program, 2)
    assert line.endswith("%s: is a directory, not a config file" % tmp_path)
    latin1 = tmp_path / "latin1.conf"
    latin1.write_bytes(b"[DEFAULT]\n# d\xe9faut\n")
    line = _one_line(_start(program, str(latin1)), program, 2)
    assert line.endswith("%s: line 2: not UTF-8 text (byte 0xe9)" % latin1)


@pytest.mark.parametrize("program", [SCHEDULER, AGENT])
def test_an_unusable_state_path_is_one_line(tmp_path, base, program) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    base["state"] = str(afile / "state")
    line = _one_line(_start(program, _write(tmp_path, BASE.format(**base))), program, 2)
    assert "[DEFAULT] state_path = '%s/state' is unusable: Not a directory" % afile in line


@pytest.mark.parametrize("program", [SCHEDULER, AGENT])
def test_an_empty_vni_range_is_one_line(tmp_path, base, program) -> None:
    text = BASE.format(**base) + "\n[networks]\nvni_min = 9000\nvni_max = 6000\n"
    line = _one_line(_start(program, _write(tmp_path, text)), program, 2)
    assert "[networks] vni_min = 9000 is more than vni_max = 6000" in line


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            "[database]\nconnection = sqlite:///{state}/mistyped/scheduler.sqlite\n",
            "[database] connection is invalid: the directory {state}/mistyped",
        ),
        ("[scheduler]\nenabled_filters = RamFilter\n", "[scheduler] enabled_filters"),
        ("[scheduler]\nweighers = ram, fastest\n", "no plugin named 'fastest'"),
    ],
    ids=["sqlite-directory", "filter", "weigher"],
)
def test_the_scheduler_checks_its_database_and_plugins_at_start(
    tmp_path, base, extra, words
) -> None:
    text = BASE.format(**base).replace("[database]\nconnection", "[database]\n#connection")
    text += "\n" + extra.format(**base)
    line = _one_line(_start(SCHEDULER, _write(tmp_path, text)), SCHEDULER, 2)
    assert words.format(**base) in line
    assert not os.path.exists(os.path.join(base["state"], "mistyped"))


@pytest.mark.parametrize(
    ("extra", "backend"),
    [
        (
            "[rbd]\nceph_conf = {dead_ceph}\nkeyring = {keyring}\nconnect_timeout = 1\n"
            "secret_uuid = 6f6b7f2e-3c1a-4e0e-9d55-1c0f4b2b9a11\n",
            "rbd",
        ),
        (
            "[iscsi]\nportal = 127.0.0.1:{port}\ntargets = iqn.2026-12.test.cd:dead\n"
            "initiator_iqn = iqn.2026-12.test.cd:agent\nconnect_timeout = 1\n",
            "iscsi",
        ),
    ],
)
def test_unreachable_storage_stops_the_agent_with_one_line(
    tmp_path, base, dead_port, extra, backend
) -> None:
    dead_ceph = tmp_path / "ceph.conf"
    dead_ceph.write_text("[global]\nmon host = 127.0.0.1:%d\n" % dead_port)
    keyring = tmp_path / "keyring"
    keyring.write_text("[client.compute]\nkey = AQBzc2V0dXBrZXlfZm9yX3Rlc3RzX29ubHk=\n")
    keyring.chmod(0o600)
    text = BASE.format(**base).replace("backends = dir", "backends = dir, " + backend)
    text += "\n" + extra.format(dead_ceph=dead_ceph, keyring=keyring, port=dead_port)
    line = _one_line(_start(AGENT, _write(tmp_path, text)), AGENT, 1)
    assert "cannot start" in line and "backend %s" % backend in line


def test_typos_are_one_warning_line_each_and_the_service_starts(tmp_path, base) -> None:
    text = BASE.format(**base).replace("[DEFAULT]\n", "[DEFAULT]\nstat_path = /nowhere\n")
    text += "\n[schedular]\nenabled_filters = x\n"
    config_file = _write(tmp_path, text)
    # NOTE: without a log file oslo.log writes to stdout; stderr is ours.
    proc = subprocess.Popen(
        [os.path.join(BIN, SCHEDULER), "--config-file", config_file],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120  # only against a hang: we wait for the line
        while not any("listening on topic" in line for line in lines):
            ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
            assert ready, "no start-up line: %s" % "".join(lines)
            line = proc.stdout.readline()
            assert line, "the scheduler exited: %s" % "".join(lines)
            lines.append(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    warnings = [line for line in lines if " WARNING " in line and config_file in line]
    assert [w.split(" [-] ", 1)[1].strip() for w in warnings] == [
        "%s: [DEFAULT] stat_path: unknown option, ignored" % config_file,
        "%s: [schedular]: unknown section, ignored" % config_file,
    ]
