"""The scheduler database's faults say what is wrong (issue 13 item 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from compute_driver import exception
from compute_driver.scheduler.database import Database
from compute_driver.scheduler.models import Host


def test_a_full_disk_says_which_disk_and_how_full(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.sqlite"
    db = Database("sqlite:///%s" % path)
    db.upgrade()
    with db.engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar()

    @sa.event.listens_for(db.engine, "connect")
    def limit(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA max_page_count = %d" % pages)
        cursor.close()

    db.engine.dispose()
    with pytest.raises(exception.DatabaseUnavailable) as info:
        with db.session() as session:
            for i in range(200):
                session.add(Host(name="h%03d" % i, capabilities={"pad": "x" * 4000}))
    message = info.value.message
    assert info.value.code == "database_unavailable"
    assert str(path) in message and "is full" in message and "MiB free of" in message
    assert "\n" not in message
