"""What a service checks at start (issue 12, item 16), each with real config files.

A bad file is one line: a directory or non-UTF-8 text given as a config file,
an empty range, a secret's value never echoed; typos are warned about; a
SQLite path in a missing directory, an unknown filter or weigher, an unusable
state_path, a malformed transport URL, a dead broker and unreachable storage
are found at start, each one line.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator

import pytest

from compute_driver import config, exception, service
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.store import Store


def _one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- files -----------------------------------------------------------------------


def test_a_directory_given_as_the_config_file_is_one_line(tmp_path, load_conf) -> None:
    with pytest.raises(exception.InvalidConfig) as info:
        load_conf(tmp_path)
    assert _one_line(info) == "%s: is a directory, not a config file" % tmp_path


def test_a_file_that_is_not_utf8_is_one_line(write_conf, load_conf) -> None:
    path = write_conf("")
    path.write_bytes(b"[DEFAULT]\n# caf\xe9\nhost = h1\n")
    with pytest.raises(exception.InvalidConfig) as info:
        load_conf(path)
    assert _one_line(info) == "%s: line 2: not UTF-8 text (byte 0xe9)" % path


def test_a_bad_file_in_the_config_dir_is_named(tmp_path, fresh_conf) -> None:
    conf_dir = tmp_path / "conf.d"
    conf_dir.mkdir()
    (conf_dir / "10-ok.conf").write_text("[DEFAULT]\n")
    (conf_dir / "20-bad.conf").write_bytes(b"[DEFAULT]\nhost = \xff\n")
    with pytest.raises(exception.InvalidConfig, match="20-bad.conf: line 2: not UTF-8"):
        config.load(["--config-dir", str(conf_dir)], "t", conf=fresh_conf, default_config_files=[])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[networks]\nvni_min = 100\nvni_max = 10\n", r"\[networks\] vni_min = 100 is more than"),
        ("[networks]\nvlan_min = 300\nvlan_max = 200\n", r"vlan_min = 300 is more than vlan_max"),
        ("[networks]\nvlan_max = 2\nvlan_min = 3\n", r"vlan_min = 3 is more than vlan_max = 2"),
    ],
)
def test_an_empty_range_is_one_line_naming_the_file(write_conf, load_conf, text, match) -> None:
    path = write_conf(text)
    with pytest.raises(exception.InvalidConfig, match=match) as info:
        load_conf(path)
    assert _one_line(info).startswith(str(path) + ": ")


def test_a_secret_value_is_never_echoed(write_conf, load_conf) -> None:
    path = write_conf("[database]\nconnection = postgresql://cd:Hunter2pw@db/$nosuchvar\n")
    with pytest.raises(exception.InvalidConfig) as info:
        load_conf(path)
    message = _one_line(info)
    assert "[database] connection = '***'" in message
    assert "Hunter2pw" not in message


def test_typos_in_sections_and_options_are_listed_once_each(write_conf, load_conf) -> None:
    path = write_conf(
        "[DEFAULT]\nstat_path = /x\ndebug = true\ntransport_url = rabbit://\n"
        "control_exchange = x\n"
        "[schedular]\nenabled_filters = a\n"
        "[scheduler]\nenabled_filterz = a\nweighers = ram\n"
        "[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 30\nheartbeat_timout = 1\n"
        "[ovs]\nintegration_bridge = br-int\n"
    )
    conf = load_conf(path)
    assert config.unknown_options(conf) == [
        "%s: [DEFAULT] stat_path: unknown option, ignored" % path,
        "%s: [schedular]: unknown section, ignored" % path,
        "%s: [scheduler] enabled_filterz: unknown option, ignored" % path,
        "%s: [oslo_messaging_rabbit] heartbeat_timout: unknown option, ignored" % path,
    ]


def test_every_option_of_the_sample_config_is_known(repo_dir, fresh_conf) -> None:
    """The namespaces of the sample (ours, oslo.messaging's, oslo.log's) are all known."""
    sample = repo_dir / "etc" / "compute-driver" / "compute-driver.conf.sample"
    known = config._known_options(fresh_conf)
    section, documented = "DEFAULT", []
    for line in sample.read_text().splitlines():
        if match := re.fullmatch(r"\[(\w+)\]", line):
            section = match.group(1)
        elif match := re.match(r"#(\w+) = ", line):
            documented.append((section, match.group(1)))
    assert len(documented) > 100
    assert [(s, o) for s, o in documented if o not in known.get(s, ())] == []


def test_the_library_namespaces_are_the_sample_configs(repo_dir) -> None:
    generator = repo_dir / "etc" / "compute-driver" / "config-generator.conf"
    namespaces = re.findall(r"^namespace = (\S+)$", generator.read_text(), re.M)
    assert tuple(n for n in namespaces if n != "compute_driver") == (
        config.PLUGIN_NAMESPACES + config.LIBRARY_NAMESPACES
    )


# --- the scheduler's database and plugins ---------------------------------------


def test_a_sqlite_database_in_a_missing_directory_is_refused(tmp_path) -> None:
    missing = tmp_path / "mistyped" / "scheduler.sqlite"
    with pytest.raises(exception.InvalidConfig) as info:
        Store(Database("sqlite:///%s" % missing))
    assert "does not exist" in _one_line(info)
    assert not missing.parent.exists()


def test_the_scheduler_checks_its_database_url_and_plugins_at_start(
    tmp_path, write_conf, load_conf
) -> None:
    from compute_driver.scheduler import service as scheduler_service

    path = write_conf(
        "[DEFAULT]\nstate_path = %s\n[database]\nconnection = sqlite:///%s/typo/s.sqlite\n"
        % (tmp_path, tmp_path)
    )
    with pytest.raises(exception.InvalidConfig, match=r"\[database\] connection .*does not exist"):
        scheduler_service.check_config(load_conf(path))
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[scheduler]\nenabled_filters = ComputeFilter\n", r"\[scheduler\] enabled_filters"),
        ("[scheduler]\nweighers = ram, nosuch\n", r"\[scheduler\] weighers: no plugin named"),
    ],
)
def test_an_unknown_filter_or_weigher_is_found_at_start(
    tmp_path, write_conf, load_conf, text: str, match: str
) -> None:
    from compute_driver.scheduler import service as scheduler_service

    path = write_conf("[DEFAULT]\nstate_path = %s\n%s" % (tmp_path, text))
    with pytest.raises(exception.InvalidConfig, match=match) as info:
        scheduler_service.check_config(load_conf(path))
    assert _one_line(info).startswith(str(path))


# --- state_path, transport, storage --------------------------------------------


def test_an_unusable_state_path_is_one_line(tmp_path, write_conf, load_conf) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    path = write_conf("[DEFAULT]\nstate_path = %s/state\n" % afile)
    with pytest.raises(exception.InvalidConfig) as info:
        service.check_state_path(load_conf(path))
    assert _one_line(info) == (
        "%s: [DEFAULT] state_path = '%s/state' is unusable: Not a directory" % (path, afile)
    )


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("foo://u:Hunter2pw@h/", r"no driver 'foo'"),
        ("rabbit://u:Hunter2pw@[::1/", r"Invalid IPv6 URL"),
        ("rabbit://u:Hunter2pw@host:port/", r"invalid literal for int"),
        ("Hunter2pw", r"No scheme specified"),
    ],
)
def test_a_malformed_transport_url_is_one_line_without_the_password(
    write_conf, load_conf, url: str, match: str
) -> None:
    path = write_conf("[DEFAULT]\ntransport_url = %s\n" % url)
    with pytest.raises(exception.InvalidConfig, match=match) as info:
        service.check_transport(load_conf(path))
    message = _one_line(info)
    assert message.startswith("%s: [DEFAULT] transport_url is invalid: " % path)
    assert "Hunter2pw" not in message


@pytest.mark.parametrize("url", ["kombu+memory:////", "fake://", "rabbit://u:p@h1:5672,u:p@h2/v"])
def test_well_formed_transport_urls_pass(write_conf, load_conf, url: str) -> None:
    config.check_transport_url(load_conf(write_conf("[DEFAULT]\ntransport_url = %s\n" % url)))


def test_a_dead_broker_is_one_line_at_start(write_conf, load_conf, dead_port: int) -> None:
    path = write_conf(
        "[DEFAULT]\ntransport_url = rabbit://u:Hunter2pw@127.0.0.1:%d/\n"
        "[rpc]\nconnection_retries = 0\n" % dead_port
    )
    with pytest.raises(exception.MessagingError) as info:
        service.check_transport(load_conf(path))
    message = _one_line(info)
    assert "127.0.0.1:%d" % dead_port in message and "refused" in message
    assert "Hunter2pw" not in message


class _Unreachable:
    def capacity(self) -> None:
        from storage_backends import exception as storage_exception

        raise storage_exception.BackendUnavailable(
            operation="capacity", volume="pool", reason="no monitor answered within 1 s"
        )


class _Fine:
    def capacity(self) -> None:
        return None


def test_unreachable_storage_stops_the_agent_at_start() -> None:
    from compute_driver.agent.service import check_storage

    check_storage({"dir": _Fine()})
    with pytest.raises(exception.StorageError) as info:
        check_storage({"dir": _Fine(), "rbd": _Unreachable()})
    message = _one_line(info)
    assert "backend rbd" in message and "no monitor answered" in message


# --- computectl ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (b"[DEFAULT]\n# d\xe9faut\n", "line 2: not UTF-8 text"),
        (b"[DEFAULT]\ntransport_url = foo://u:Hunter2pw@h/\n", "no driver 'foo'"),
        (b"[DEFAULT]\ntransport_url = rabbit://u:Hunter2pw@h:port/\n", "invalid literal"),
        (b"[DEFAULT]\ntransport_url = rabbit://u:Hunter2pw@127.0.0.1:{port}/\n", "refused"),
        (b"", "is a directory"),
    ],
    ids=["latin1", "scheme", "port", "dead-broker", "directory"],
)
def test_computectl_says_a_bad_config_in_one_line(
    tmp_path, bin_dir, dead_port: int, text: bytes, words: str
) -> None:
    path = tmp_path / "c.conf"
    if text:
        path.write_bytes(text.replace(b"{port}", str(dead_port).encode()))
    else:
        path.mkdir()
    done = subprocess.run(
        [str(bin_dir / "computectl"), "--config-file", str(path), "flavor", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert words in done.stderr and "Hunter2pw" not in done.stderr
