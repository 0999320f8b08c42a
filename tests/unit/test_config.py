"""config.load and plugins.load turn bad configuration into one-line InvalidConfig errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from compute_driver import exception, plugins


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    assert message == exc.value.message
    return message


def test_missing_config_file_names_the_path(tmp_path, load_conf):
    missing = tmp_path / "nowhere.conf"
    with pytest.raises(exception.InvalidConfig) as exc:
        load_conf(missing)
    message = _one_line(exc)
    assert str(missing) in message
    assert "cannot read" in message


def test_unparsable_file_names_the_path_and_line(write_conf, load_conf):
    path = write_conf("[agent]\nthis line has no equals sign\n")
    with pytest.raises(exception.InvalidConfig) as exc:
        load_conf(path)
    message = _one_line(exc)
    assert str(path) in message
    assert "cannot parse" in message
    assert "this line has no equals sign" in message


@pytest.mark.parametrize(
    ("text", "where", "bad", "allowed"),
    [
        pytest.param(
            "[libvirt]\nvirt_type = foo\n",
            "[libvirt] virt_type",
            "'foo'",
            "auto, kvm, qemu",
            id="bad-choice",
        ),
        pytest.param(
            "[agent]\nreport_interval = 0\n",
            "[agent] report_interval",
            "'0'",
            "greater than or equal to 1",
            id="int-below-min",
        ),
        pytest.param(
            "[agent]\nreport_interval = 3601\n",
            "[agent] report_interval",
            "'3601'",
            "less than or equal to 3600",
            id="int-above-max",
        ),
        pytest.param(
            "[agent]\nreport_interval = ten\n",
            "[agent] report_interval",
            "'ten'",
            "int",
            id="not-an-int",
        ),
        pytest.param(
            "[scheduler]\ncpu_allocation_ratio = 100\n",
            "[scheduler] cpu_allocation_ratio",
            "'100'",
            "less than or equal to 64",
            id="float-above-max",
        ),
        pytest.param(
            "[upgrade_levels]\ncompute = latest\n",
            "[upgrade_levels] compute",
            "'latest'",
            "regex",
            id="regex",
        ),
        pytest.param(
            "[DEFAULT]\nhost = bad host!\n",
            "[DEFAULT] host",
            "'bad host!'",
            "not a valid host address",
            id="host-address",
        ),
    ],
)
def test_bad_value_names_file_section_option_value_and_rule(
    write_conf, load_conf, text, where, bad, allowed
):
    path = write_conf(text)
    with pytest.raises(exception.InvalidConfig) as exc:
        load_conf(path)
    message = _one_line(exc)
    assert message.startswith(str(path) + ": "), message
    assert where + " = " + bad in message
    assert allowed in message
    assert exc.value.code == "invalid_config"


def test_last_file_that_sets_the_option_is_named(write_conf, load_conf):
    good = write_conf("[agent]\nreport_interval = 5\n", "a.conf")
    bad = write_conf("[agent]\nreport_interval = 0\n", "b.conf")
    with pytest.raises(exception.InvalidConfig) as exc:
        load_conf(good, bad)
    assert _one_line(exc).startswith(str(bad) + ": ")


def test_valid_file_loads(write_conf, load_conf):
    path = write_conf("[libvirt]\nvirt_type = qemu\n[agent]\nreport_interval = 7\n")
    conf = load_conf(path)
    assert conf.libvirt.virt_type == "qemu"
    assert conf.agent.report_interval == 7


def test_bad_substitution_is_invalid_config(write_conf, load_conf):
    path = write_conf("[libvirt]\ninstances_path = $state_pth/instances\n")
    with pytest.raises(exception.InvalidConfig) as exc:
        load_conf(path)
    message = _one_line(exc)
    assert str(path) in message
    assert "[libvirt] instances_path" in message
    assert "state_pth" in message


def test_bad_value_of_cli_option_in_file_is_invalid_config(write_conf, load_conf):
    path = write_conf("[DEFAULT]\ndebug = maybe\n")
    try:
        with pytest.raises(exception.InvalidConfig) as exc:
            load_conf(path)
    except SystemExit as stop:
        pytest.fail("config.load raised SystemExit(%s) instead of InvalidConfig" % stop.code)
    message = _one_line(exc)
    assert str(path) in message
    assert "[DEFAULT] debug = 'maybe'" in message


# --- plugins.load --------------------------------------------------------------


def test_unknown_plugin_names_option_file_and_available(write_conf, load_conf):
    path = write_conf("[agent]\nnetwork_plugins = bogus\n")
    conf = load_conf(path)
    with pytest.raises(exception.InvalidConfig) as exc:
        plugins.load(
            plugins.NETWORK_NAMESPACE,
            conf.agent.network_plugins[0],
            conf,
            "agent",
            "network_plugins",
        )
    message = _one_line(exc)
    assert message.startswith(str(path) + ": ")
    assert "[agent] network_plugins" in message
    assert "'bogus'" in message
    assert "available: linux_bridge, noop, ovs" in message


def test_unknown_plugin_set_by_override_says_default(load_conf):
    conf = load_conf()
    conf.set_override("virt_driver", "hyperv", group="agent")
    with pytest.raises(exception.InvalidConfig) as exc:
        plugins.load(plugins.VIRT_NAMESPACE, conf.agent.virt_driver, conf, "agent", "virt_driver")
    message = _one_line(exc)
    assert message.startswith("default: [agent] virt_driver = 'hyperv'")
    assert "available: libvirt" in message


def test_available_lists_installed_plugins():
    # NOTE: the shipped ones, in order; a new plugin needs no edit here.
    assert plugins.available(plugins.VIRT_NAMESPACE) == ["libvirt"]
    network = plugins.available(plugins.NETWORK_NAMESPACE)
    assert network == sorted(network) and {"linux_bridge", "noop", "ovs"} <= set(network)
    storage = plugins.available(plugins.STORAGE_NAMESPACE)
    assert storage == sorted(storage) and {"dir", "iscsi", "nfs", "rbd"} <= set(storage)
    assert plugins.available("compute_driver.nosuch") == []


# --- the services' start-up ----------------------------------------------------

BAD_CHOICE = "[libvirt]\nvirt_type = foo\n"


def _run_service(bin_dir, repo_dir, program: str, config_file: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / program), "--config-file", config_file],
        cwd=repo_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )


WARNING_HEADER = re.compile(r"^\S.*:\d+: \w*Warning: ")


def _without_warnings(stderr: str, program: str) -> list[str]:
    """The lines of ``stderr`` that are not Python warnings.

    A warning is "file:line: Category: message" (the message may span lines)
    then, indented, the source line that warned.
    """
    lines, in_warning = [], False
    for line in stderr.splitlines():
        if WARNING_HEADER.match(line):
            in_warning = True
        elif in_warning and line.startswith(program + ":"):
            in_warning = False
            lines.append(line)
        elif in_warning:
            in_warning = not line.startswith("  ")
        else:
            lines.append(line)
    return lines


@pytest.mark.parametrize("program", ["compute-agent", "compute-scheduler"])
def test_service_with_bad_config_exits_2_with_one_line(write_conf, bin_dir, repo_dir, program):
    path = write_conf(BAD_CHOICE)
    result = _run_service(bin_dir, repo_dir, program, str(path))
    assert result.returncode == 2, result.stderr
    lines = _without_warnings(result.stderr, program)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(program + ": configuration error: ")
    assert str(path) in lines[0]
    assert "[libvirt] virt_type" in lines[0]
    assert "'foo'" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("program", ["compute-agent", "compute-scheduler"])
def test_service_stderr_has_no_warning(write_conf, bin_dir, repo_dir, program):
    path = write_conf(BAD_CHOICE)
    result = _run_service(bin_dir, repo_dir, program, str(path))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "url, status, words",
    [
        ("nosuchdb://x/y", 2, ["[database] connection is invalid", "nosuchdb"]),
        ("postgresql+nosuchdriver://u:p@127.0.0.1:1/db", 2, ["[database] connection is invalid"]),
        ("sqlite:////proc/no/such/dir/db.sqlite", 2, ["[database] connection", "does not exist"]),
    ],
)
def test_scheduler_with_unusable_database_exits_with_one_line(
    tmp_path, bin_dir, url, status, words
):
    import subprocess

    conf_file = tmp_path / "s.conf"
    conf_file.write_text(
        "[DEFAULT]\nstate_path = %s\n[database]\nconnection = %s\n" % (tmp_path, url)
    )
    done = subprocess.run(
        [str(bin_dir / "compute-scheduler"), "--config-file", str(conf_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0]


# --- plugin options: registered by the loader, not by the core ------------------


def test_importing_the_config_loads_no_plugin():
    # NOTE: a fresh interpreter: this one has loaded every plugin already.
    script = (
        "import sys, compute_driver.conf\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('network_plugins', 'storage_backends', 'rados', 'rbd', 'pyroute2', 'ovsdbapp')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_core_registers_no_plugin_group(fresh_conf):
    assert not {"dir", "nfs", "rbd", "iscsi", "ovs", "linux_bridge"} & set(fresh_conf._groups)


def test_loading_a_plugin_registers_its_own_group(load_conf, tmp_path):
    conf = load_conf()
    conf.set_override("state_path", str(tmp_path))
    assert "dir" not in conf._groups
    backend = plugins.load(plugins.STORAGE_NAMESPACE, "dir", conf, "storage", "backends")
    assert backend.name == "dir"
    assert conf.dir.path == str(tmp_path / "volumes")
    assert "ovs" not in conf._groups  # only the loaded plugin's


def test_a_bad_value_in_a_loaded_plugins_group_is_one_line_naming_the_file(write_conf, load_conf):
    path = write_conf("[dir]\nvolume_format = vmdk\n")
    conf = load_conf(path)  # [dir] is not known yet: no error here
    with pytest.raises(exception.InvalidConfig) as exc:
        plugins.load(plugins.STORAGE_NAMESPACE, "dir", conf, "storage", "backends")
    message = _one_line(exc)
    assert message.startswith(str(path) + ": [dir] volume_format = 'vmdk' is invalid")
