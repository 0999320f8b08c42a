"""computectl: every documented command parses; errors are one line and a documented status."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any

import pytest
from oslo_config import cfg
from oslo_messaging._drivers import common as rpc_common

from compute_driver import client as client_mod
from compute_driver import exception
from compute_driver.cli import main as cli
from compute_driver.cli import output
from compute_driver.rpc import transport
from storage_backends import exception as storage_exception

UUID = "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ("host list", {"group": "host", "action": "list"}),
        ("host show compute-1", {"action": "show", "host": "compute-1"}),
        ("flavor list", {"group": "flavor", "action": "list"}),
        (
            "flavor create m2.big --vcpus 4 --ram 8192 --disk 40",
            {"action": "create", "name": "m2.big", "vcpus": 4, "memory_mb": 8192, "root_gb": 40},
        ),
        ("flavor delete m2.big", {"action": "delete", "name": "m2.big"}),
        (
            "image import cirros /tmp/disk.img --kernel /tmp/k --initrd /tmp/i "
            "--cmdline console=ttyS0",
            {
                "action": "import",
                "name": "cirros",
                "file": "/tmp/disk.img",
                "kernel": "/tmp/k",
                "initrd": "/tmp/i",
                "cmdline": "console=ttyS0",
            },
        ),
        ("image import cirros disk.img", {"kernel": None, "initrd": None, "cmdline": None}),
        ("image list", {"group": "image", "action": "list"}),
        ("image show cirros", {"action": "show", "image": "cirros"}),
        ("image delete cirros", {"action": "delete", "image": "cirros"}),
        (
            "server create web --flavor m1.tiny --image cirros --host compute-1 --project demo "
            "--user-data /tmp/ud --wait",
            {
                "action": "create",
                "name": "web",
                "flavor": "m1.tiny",
                "image": "cirros",
                "host": "compute-1",
                "project": "demo",
                "user_data": "/tmp/ud",
                "wait": True,
            },
        ),
        (
            "server create web --flavor m1.tiny --image cirros",
            {
                "host": None,
                "project": None,
                "user_data": None,
                "wait": False,
                "wait_timeout": 600,
            },
        ),
        ("server list --project demo", {"action": "list", "project": "demo", "host": None}),
        ("server list", {"action": "list", "project": None}),
        ("server show web", {"action": "show", "server": "web"}),
        ("server delete web", {"action": "delete", "server": "web", "wait": False}),
        ("server delete web --wait", {"action": "delete", "server": "web", "wait": True}),
        (
            "server console-log web --lines 5",
            {"action": "console-log", "server": "web", "lines": 5},
        ),
        ("server console-log web", {"lines": 100}),
        ("demo --embedded", {"group": "demo", "embedded": True}),
        (
            "--config-file a.conf --config-file b.conf -f json --timeout 5 host list",
            {"config_file": ["a.conf", "b.conf"], "format": "json", "timeout": 5},
        ),
    ],
)
def test_documented_commands_parse(argv, expected):
    args = cli.build_parser().parse_args(argv.split())
    for key, value in expected.items():
        assert getattr(args, key) == value, key
    assert args.format == expected.get("format", "table")


@pytest.mark.parametrize(
    "argv",
    [
        "",
        "server",
        "bogus list",
        "server create web --flavor m1.tiny",
        "server console-log web --lines five",
        "flavor create x --vcpus 1 --ram 64",
        "-f xml host list",
        "host list --extra",
    ],
)
def test_usage_error_exits_2_with_one_line(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv.split())
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("computectl")
    assert "invalid input: " in err


# --- main() against a stand-in client ----------------------------------------------

HOSTS = [
    {
        "name": "compute-1",
        "state": "up",
        "enabled": True,
        "vcpus": 8,
        "vcpus_used": 1,
        "memory_mb": 16384,
        "memory_mb_used": 512,
        "disk_gb": 100,
        "disk_gb_used": 1,
        "capabilities": {"virt_type": "kvm"},
    }
]
SERVER = {
    "name": "web",
    "uuid": UUID,
    "project": "demo",
    "flavor": "m1.tiny",
    "host": "compute-1",
    "vm_state": "active",
    "task_state": None,
    "power_state": "running",
    "fault": None,
}


class FakeClient:
    """Answers like the scheduler would, or raises ``FakeClient.error``."""

    error: BaseException | None = None
    calls: list[tuple[str, tuple]] = []
    identities: list[dict[str, Any]] = []

    def __init__(self, conf: cfg.ConfigOpts, timeout: int | None = None, **identity: Any) -> None:
        self.timeout = timeout
        FakeClient.identities.append(identity)

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any, **kwargs: Any) -> Any:
            FakeClient.calls.append((name, args + tuple(sorted(kwargs.items()))))
            if FakeClient.error is not None:
                raise FakeClient.error
            return {
                "list_hosts": HOSTS,
                "list_servers": [SERVER],
                "show_server": SERVER,
                "create_server": SERVER,
                "console_log": "line 1\nline 2",
                "delete_flavor": None,
            }.get(name, SERVER)

        return method


@pytest.fixture
def fake_client(monkeypatch, tmp_path):
    monkeypatch.setattr(client_mod, "Client", FakeClient)
    monkeypatch.setattr(FakeClient, "error", None)
    monkeypatch.setattr(FakeClient, "calls", [])
    monkeypatch.setattr(FakeClient, "identities", [])
    # NOTE: main() parses into the global cfg.CONF: give it an empty file (so no
    # /etc file is read) and clear what it parsed afterwards.
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    yield ["--config-file", str(empty)]
    cfg.CONF.reset()
    cfg.CONF.clear()


@pytest.fixture
def printed(fake_client, monkeypatch):
    """fake_client, with output going to the sys.stdout of the moment (so capsys sees it)."""
    # NOTE: output.emit binds sys.stdout when the module is imported (see
    # test_output_follows_sys_stdout); pass the current one explicitly.
    emit = output.emit
    monkeypatch.setattr(
        output, "emit", lambda result, fmt, columns=None: emit(result, fmt, columns, out=sys.stdout)
    )
    return fake_client


def _remote(error: exception.ComputeDriverError) -> BaseException:
    """``error`` as it arrives from the scheduler (str() carries the remote traceback)."""
    try:
        raise error
    except exception.ComputeDriverError:
        data = rpc_common.serialize_remote_exception(sys.exc_info())
    return rpc_common.deserialize_remote_exception(data, transport.ALLOWED_EXMODS)


ERRORS = [
    (lambda: exception.NoValidHost(instance="web", reason="compute-1: down"), 1),
    (lambda: exception.MessagingTimeout(service="scheduler", timeout=60), 1),
    (lambda: storage_exception.NoSpace(backend="dir", volume="v", needed="1G", free="0"), 1),
    (
        lambda: exception.InvalidPayload(method="scheduler.show_server", reason="server: too long"),
        2,
    ),
    (lambda: exception.InvalidConfig(reason="bad"), 2),
    (lambda: exception.InstanceNotFound(instance="web"), 3),
    (lambda: exception.FlavorNotFound(flavor="m9"), 3),
    (lambda: exception.Conflict(reason="2 servers are named web; use a UUID"), 4),
    (lambda: exception.InUse(what="Image", name="cirros", reason="used by server(s) web"), 4),
]
CASES = [pytest.param(make, status, False, id="local-%s" % make().code) for make, status in ERRORS]
# NOTE: only errors of modules the transport rebuilds arrive as themselves
# (see test_exceptions.py for those that do not).
CASES += [
    pytest.param(make, status, True, id="remote-%s" % make().code)
    for make, status in ERRORS
    if type(make()).__module__ in transport.ALLOWED_EXMODS
]


@pytest.mark.parametrize(("make_error", "status", "remote"), CASES)
def test_error_kind_maps_to_exit_status_and_one_line(
    capsys, fake_client, make_error, status, remote
):
    error = make_error()
    FakeClient.error = _remote(error) if remote else error
    assert cli.main(fake_client + ["server", "show", "web"]) == status
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "computectl: %s: %s\n" % (error.code, error.message)


def test_missing_user_data_file_is_invalid_input(capsys, fake_client, tmp_path):
    missing = tmp_path / "no-such-user-data"
    argv = [
        "server",
        "create",
        "web",
        "--flavor",
        "m1.tiny",
        "--image",
        "cirros",
        "--user-data",
        str(missing),
    ]
    assert cli.main(fake_client + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("computectl: invalid: ")
    assert str(missing) in err
    assert FakeClient.calls == []


def test_user_data_file_is_sent_as_bytes(capsys, printed, tmp_path):
    user_data = tmp_path / "ud.sh"
    user_data.write_bytes(b"#!/bin/sh\necho hi\n")
    argv = [
        "server",
        "create",
        "web",
        "--flavor",
        "m1.tiny",
        "--image",
        "cirros",
        "--project",
        "demo",
        "--user-data",
        str(user_data),
    ]
    assert cli.main(printed + argv) == 0
    assert FakeClient.calls == [
        (
            "create_server",
            (
                "web",
                "m1.tiny",
                "cirros",
                "demo",
                None,
                b"#!/bin/sh\necho hi\n",
                ("availability_zone", None),
                ("boot_volume", None),
                ("full_clone", False),
                ("group", None),
                ("networks", []),
                ("root_backend", None),
            ),
        )
    ]


def test_invalid_config_file_is_exit_2(capsys, fake_client, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[libvirt]\nvirt_type = foo\n")
    assert cli.main(["--config-file", str(bad), "host", "list"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("computectl: invalid_config: %s: [libvirt] virt_type = 'foo'" % bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["host", "list"],
        ["server", "list"],
        ["server", "show", "web"],
        ["server", "console-log", "web"],
        ["flavor", "delete", "x"],
    ],
)
def test_json_output_is_valid_with_sorted_keys(capsys, printed, argv):
    assert cli.main(printed + ["-f", "json"] + argv) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert out == json.dumps(data, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize(
    ("argv", "columns"),
    [
        (["host", "list"], cli.HOST_COLUMNS),
        (["server", "list", "--project", "demo"], cli.SERVER_COLUMNS),
        (["server", "show", "web"], ["Field", "Value"]),
    ],
)
def test_table_output_has_the_column_headers(capsys, printed, argv, columns):
    assert cli.main(printed + argv) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [cell.strip() for cell in lines[1].strip("|").split("|")]
    assert header == list(columns)
    assert lines[0] == lines[2] == lines[-1]
    assert lines[0].startswith("+-")


def test_table_output_of_a_server(capsys, printed):
    assert cli.main(printed + ["server", "list"]) == 0
    row = capsys.readouterr().out.splitlines()[3]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == ["web", UUID, "demo", "m1.tiny", "compute-1", "active", "", "running"]


def test_console_log_prints_the_text(capsys, printed):
    assert cli.main(printed + ["server", "console-log", "web", "--lines", "5"]) == 0
    assert capsys.readouterr().out == "line 1\nline 2\n"
    assert FakeClient.calls == [("console_log", ("web", 5))]


def test_main_reads_the_given_config_file(printed):
    # main() parses into cfg.CONF (the fixture clears it afterwards).
    assert cli.main(printed + ["host", "list"]) == 0
    assert cfg.CONF.config_file == [printed[1]]


def test_output_follows_sys_stdout(fake_client):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        try:
            status = cli.main(fake_client + ["server", "show", "web"])
        except ValueError as exc:  # the stream bound at import may be closed by now
            pytest.fail("main() wrote to a stale sys.stdout: %s" % exc)
    assert status == 0
    assert "| Field" in buffer.getvalue()


def test_progress_is_silent_when_piped() -> None:
    """Progress writes nothing when its stream is not a terminal."""
    stream = io.StringIO()
    progress = output.Progress(stream)
    progress.update("Building web: spawning (3 s)")
    progress.done()
    assert stream.getvalue() == ""
    assert output.Progress().out is sys.stderr


def test_unreachable_broker_fails_fast_with_one_line(tmp_path, bin_dir) -> None:
    """oslo.messaging alone would retry forever; computectl says so and exits."""
    import subprocess

    conf_file = tmp_path / "c.conf"
    conf_file.write_text("[DEFAULT]\ntransport_url = rabbit://guest:guest@127.0.0.1:1/\n")
    # NOTE: the timeout is the hang guard (oslo.messaging alone never gives
    # up); how fast it fails is not asserted, it moves with the host's load.
    done = subprocess.run(
        [str(bin_dir / "computectl"), "--config-file", str(conf_file), "host", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("computectl: messaging_error: ")
    assert "127.0.0.1:1" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_property_options_parse_into_pairs() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "flavor",
            "create",
            "f1",
            "--vcpus",
            "2",
            "--ram",
            "512",
            "--disk",
            "1",
            "--property",
            "hw:cpu_policy=dedicated",
            "--property",
            "hw:numa_nodes=1",
        ]
    )
    assert dict(args.property) == {"hw:cpu_policy": "dedicated", "hw:numa_nodes": "1"}
    args = parser.parse_args(["image", "import", "i", "/f", "--property", "hw_disk_bus=scsi"])
    assert dict(args.property) == {"hw_disk_bus": "scsi"}


def test_property_without_equals_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["image", "import", "i", "/f", "--property", "novalue"])
    assert exit_info.value.code == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err


def test_computectl_acts_as_the_operator_unless_given_a_project(printed):
    # NOTE: the operator (no --project) is an admin of every project and
    # creates in project "default" unless told; --project P acts as P only.
    assert cli.main(printed + ["server", "show", "web"]) == 0
    assert cli.main(printed + ["--project", "b", "server", "show", "web"]) == 0
    assert cli.main(printed + ["--project", "b", "--admin", "host", "list"]) == 0
    assert FakeClient.identities == [
        {"admin": True},
        {"project": "b", "admin": False},
        {"project": "b", "admin": True},
    ]


@pytest.mark.parametrize(
    "argv, project",
    [
        (["server", "create", "web", "--flavor", "m1.tiny", "--image", "cirros"], "default"),
        (["--project", "b", "server", "create", "web", "--flavor", "f", "--image", "i"], None),
        (["volume", "create", "v", "--size", "1", "--backend", "dir"], "default"),
        (["--project", "b", "volume", "create", "v", "--size", "1", "--backend", "dir"], None),
        (["network", "create", "n", "--type", "vxlan", "--cidr", "10.0.0.0/24"], "default"),
    ],
)
def test_a_create_belongs_to_the_project_acted_as(printed, argv, project):
    # None: the client leaves it out and the scheduler takes the context's.
    assert cli.main(printed + argv) == 0
    ((_, args),) = FakeClient.calls
    assert args[3] == project


@pytest.mark.parametrize(
    "argv",
    [
        ["server", "list", "-f", "json"],
        ["server", "show", "web", "--format", "json"],
        ["host", "list", "-f", "json", "--timeout", "5"],
    ],
)
def test_format_may_follow_the_command(capsys, printed, argv):
    # python-openstackclient's users put -f after the command (issue 16).
    assert cli.main(printed + argv) == 0
    out = capsys.readouterr().out
    assert json.loads(out) and out.startswith(("[", "{"))


def test_project_may_follow_a_command_that_has_none_of_its_own(printed):
    assert cli.main(printed + ["server", "show", "web", "--project", "b"]) == 0
    assert cli.main(printed + ["host", "list", "--project", "b", "-f", "json"]) == 0
    assert FakeClient.identities == [
        {"project": "b", "admin": False},
        {"project": "b", "admin": False},
    ]


def test_an_option_not_repeated_after_the_command_keeps_its_value_from_before():
    args = cli.build_parser().parse_args(["-f", "json", "--project", "b", "server", "show", "x"])
    assert (args.format, args.as_project) == ("json", "b")
    args = cli.build_parser().parse_args(["--timeout", "5", "flavor", "list", "--timeout", "7"])
    assert args.timeout == 7
