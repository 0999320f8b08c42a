"""What the scheduler writes is readable by the services only (issue 12,
item 1): its directories, its SQLite database and its journal."""

from __future__ import annotations

import os
import stat

from compute_driver.scheduler import database
from compute_driver.scheduler.service import ensure_state_dirs


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_state_dirs_are_closed(fresh_conf, tmp_path):
    fresh_conf.set_override("state_path", str(tmp_path / "state"))
    ensure_state_dirs(fresh_conf)
    assert _mode(str(tmp_path / "state")) == 0o711
    assert _mode(str(tmp_path / "state" / "images")) == 0o711
    assert _mode(str(tmp_path / "state" / "import")) == 0o700


def test_an_old_open_image_store_is_closed(fresh_conf, tmp_path):
    store = tmp_path / "images"
    store.mkdir(mode=0o755)
    fresh_conf.set_override("state_path", str(tmp_path))
    ensure_state_dirs(fresh_conf)
    assert _mode(str(store)) == 0o711


def test_the_sqlite_database_is_private(tmp_path):
    path = tmp_path / "scheduler.sqlite"
    db = database.Database("sqlite:///%s" % path)
    with db.connection() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    db.engine.dispose()
    assert _mode(str(path)) == 0o600
    for extra in ("-journal", "-wal", "-shm"):
        if os.path.exists(str(path) + extra):
            assert _mode(str(path) + extra) == 0o600


def test_an_existing_open_database_is_closed(tmp_path):
    path = tmp_path / "scheduler.sqlite"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    database.Database("sqlite:///%s" % path).engine.dispose()
    assert _mode(str(path)) == 0o600
