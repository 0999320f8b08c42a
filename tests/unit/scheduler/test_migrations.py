"""The alembic migrations and the SQLAlchemy models describe the same schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from compute_driver.scheduler.models import Base
from compute_driver.scheduler.store import Store


def test_migrated_database_matches_the_models(tmp_path) -> None:
    store = Store("sqlite:///%s" % (tmp_path / "m.sqlite"))
    store.upgrade()
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], "models and migrations differ; write a migration: %s" % diff


def test_upgrade_twice_is_a_no_op(tmp_path) -> None:
    store = Store("sqlite:///%s" % (tmp_path / "m.sqlite"))
    store.upgrade()
    store.upgrade()
    assert [f["name"] for f in store.list_flavors()][:2] == ["m1.nano", "m1.tiny"]
