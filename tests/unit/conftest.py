"""Shared fixtures of the unit tests: private ConfigOpts, config files, paths.

``cfg.CONF`` is global: a test that parses configuration uses its own
``cfg.ConfigOpts`` from :func:`fresh_conf` and never touches the global one.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver import config as cd_config

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    # NOTE: oslo.messaging imports oslo.service, which imports eventlet and
    # warns on import. In-process tests do not care; that the services' own
    # stderr stays clean is checked in test_config.py.
    config.addinivalue_line("filterwarnings", "ignore:(?s).*Eventlet is deprecated")
    # The oslo libraries' own deprecations (tox ignores DeprecationWarning too).
    config.addinivalue_line("filterwarnings", r"ignore::DeprecationWarning:oslo_\w+")


@pytest.fixture(scope="session")
def qemu_img() -> str:
    """The qemu-img tests compare against; missing, the test fails and says how to get it."""
    path = shutil.which("qemu-img")
    if path is None:
        pytest.fail("qemu-img is not installed: apt-get install qemu-utils (tools/install-deps.sh)")
    return path


@pytest.fixture
def repo_dir() -> Path:
    """The top of the source tree (where tox and make run)."""
    return REPO


@pytest.fixture
def bin_dir() -> Path:
    """The scripts of the interpreter running the tests (.venv/bin, or tox's env)."""
    return Path(sys.executable).parent


@pytest.fixture
def fresh_conf() -> Iterator[cfg.ConfigOpts]:
    """A private ConfigOpts with every compute-driver option registered.

    NOTE: oslo.config keeps overrides in the option group objects, which
    every ConfigOpts registering our module-level groups shares: without the
    reset, a test's set_override would leak into later tests.
    """
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    yield conf
    conf.reset()


@pytest.fixture
def write_conf(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write ``text`` to ``tmp_path/name`` and return the path."""

    def write(text: str, name: str = "compute-driver.conf") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def load_conf(fresh_conf: cfg.ConfigOpts) -> Callable[..., cfg.ConfigOpts]:
    """``config.load`` of some config files into :func:`fresh_conf`."""

    def load(*files: os.PathLike | str) -> cfg.ConfigOpts:
        argv = [arg for f in files for arg in ("--config-file", str(f))]
        return cd_config.load(argv, "unit-test", conf=fresh_conf, default_config_files=[])

    return load
