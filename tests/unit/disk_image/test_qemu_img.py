"""The one qemu-img runner: limits, typed errors, and the layer it lives in."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from compute_driver import exception
from compute_driver.disk_image import qemu_img as runner

ROOT = Path(__file__).resolve().parents[3]
PRLIMIT = ["prlimit", "--as=%d" % 1024**3, "--cpu=30", "--"]


@pytest.fixture
def commands(monkeypatch) -> list[list[str]]:
    """Every command the runner starts (none is run: each 'succeeds' with '{}')."""
    seen: list[list[str]] = []

    def fake_run(args, **kwargs):
        seen.append(list(args))
        return subprocess.CompletedProcess(args, 0, "{}", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    return seen


@pytest.mark.parametrize("sub", ["info", "check"])
def test_metadata_reads_run_under_resource_limits(commands, sub):
    assert runner.run(sub, "--output=json", "/x") == "{}"
    assert commands == [[*PRLIMIT, "qemu-img", sub, "--output=json", "/x"]]


@pytest.mark.parametrize("sub", ["create", "convert", "commit", "snapshot"])
def test_writes_run_without_the_probe_limits(commands, sub):
    # NOTE: a conversion copies a whole image: 30 s of CPU would cut it short.
    runner.run(sub, "/x")
    assert commands == [["qemu-img", sub, "/x"]]


def test_a_failure_is_a_storage_error_naming_the_file_by_default(tmp_path):
    missing = str(tmp_path / "missing.qcow2")
    with pytest.raises(exception.StorageError, match="qemu-img info on .*missing.qcow2") as err:
        runner.run("info", "-f", "qcow2", missing)
    assert "No such file" in err.value.kwargs["reason"]
    assert "\n" not in str(err.value)


def test_a_caller_keeps_its_own_error_type(tmp_path):
    def error(operation: str, reason: str) -> Exception:
        return exception.VirtError(operation=operation, instance="u1", reason=reason)

    with pytest.raises(exception.VirtError, match="qemu-img info on u1 failed"):
        runner.run("info", str(tmp_path / "missing"), error=error)


def test_info_reads_a_real_image_under_prlimit(tmp_path, qemu_img):
    path = tmp_path / "disk.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    info = json.loads(runner.run("info", "--output=json", "-f", "qcow2", str(path)))
    assert info["virtual-size"] == 1024**2


def test_not_installed_and_too_slow_are_typed(monkeypatch):
    def missing(args, **kwargs):
        raise FileNotFoundError(2, "No such file", args[0])

    monkeypatch.setattr(subprocess, "run", missing)
    with pytest.raises(exception.StorageError, match="prlimit is not installed"):
        runner.run("info", "/x")
    with pytest.raises(exception.StorageError, match="qemu-img is not installed"):
        runner.run("create", "/x")

    def slow(args, **kwargs):
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", slow)
    with pytest.raises(exception.StorageError, match="qemu-img convert on /x failed: took more"):
        runner.run("convert", "/x", timeout=5)


def test_a_probe_killed_by_its_limits_says_so():
    done = subprocess.CompletedProcess([*PRLIMIT, "qemu-img", "info"], -9, "", "")
    assert runner.failure(done) == "qemu-img exceeded its limits (signal 9)"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update(
                node.module + "." + alias.name if node.module == "compute_driver" else node.module
                for alias in node.names
            )
    return names


def test_the_disk_image_package_is_neutral():
    ours = {
        name
        for path in (ROOT / "compute_driver" / "disk_image").glob("*.py")
        for name in _imports(path)
        if name.split(".")[0] not in sys.stdlib_module_names
    }
    assert ours <= {"compute_driver.exception", "compute_driver.disk_image"}


def test_virt_imports_no_plugin_package():
    wrong = sorted(
        "%s: %s" % (path.relative_to(ROOT), name)
        for path in (ROOT / "compute_driver" / "virt").rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in ("storage_backends", "network_plugins")
    )
    assert wrong == []
