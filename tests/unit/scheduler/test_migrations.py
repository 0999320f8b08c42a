"""The alembic migrations and the SQLAlchemy models describe the same schema."""

from __future__ import annotations

import datetime
import uuid as uuidlib

import pytest
import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from compute_driver import exception
from compute_driver.scheduler.catalog import Catalog
from compute_driver.scheduler.database import MIGRATIONS, Database
from compute_driver.scheduler.models import Base, Image
from compute_driver.scheduler.store import Store


def test_migrated_database_matches_the_models(tmp_path) -> None:
    store = Store(Database("sqlite:///%s" % (tmp_path / "m.sqlite")))
    store.db.upgrade()
    with store.db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], "models and migrations differ; write a migration: %s" % diff


def test_upgrade_twice_is_a_no_op(tmp_path) -> None:
    store = Store(Database("sqlite:///%s" % (tmp_path / "m.sqlite")))
    store.db.upgrade()
    store.db.upgrade()
    assert [f["name"] for f in Catalog(store.db).list_flavors()][:2] == ["m1.nano", "m1.tiny"]


def _image(name: str, project: str | None) -> dict:
    return {
        "uuid": str(uuidlib.uuid4()),
        "name": name,
        "disk_format": "raw",
        "path": "/images/%s" % name,
        "size_bytes": 1,
        "virtual_size": 1,
        "checksum": "0" * 64,
        "properties": {},
        "project": project,
        "created_at": datetime.datetime(2026, 12, 7),
    }


def check_image_names_per_owner_after_0009(url: str) -> None:
    """Upgrade a database at 0008 (a public image and a project's): its
    images survive, and names become unique per owner (public, each project).

    Shared with tests/functional/scheduler/test_postgres_migrations.py.
    """
    store = Store(Database(url))
    config = AlembicConfig()
    config.set_main_option("script_location", MIGRATIONS)
    with store.db.engine.begin() as connection:
        config.attributes["connection"] = connection
        alembic_command.upgrade(config, "0008")
    kept = [_image("cirros", None), _image("tmpl", "a")]
    with store.db.engine.begin() as connection:
        connection.execute(sa.insert(Image.__table__), kept)
        # The old constraint: a name over the whole cloud.
        with pytest.raises(IntegrityError), connection.begin_nested():
            connection.execute(sa.insert(Image.__table__), [_image("cirros", "b")])
    store.db.upgrade()
    assert {i["uuid"] for i in Catalog(store.db).list_images()} == {i["uuid"] for i in kept}
    for name, project in (("cirros", "a"), ("cirros", "b"), ("tmpl", None), ("tmpl", "b")):
        Catalog(store.db).create_image(**_image(name, project))
    for name, project in (("cirros", None), ("tmpl", "a"), ("cirros", "a")):
        with pytest.raises(exception.DuplicateName):
            Catalog(store.db).create_image(**_image(name, project))
    # The indexes themselves refuse (two creates racing past the check).
    for name, project in (("cirros", None), ("tmpl", "a")):
        with pytest.raises(IntegrityError), store.db.engine.begin() as connection:
            connection.execute(sa.insert(Image.__table__), [_image(name, project)])
    with store.db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], "models and migrations differ: %s" % diff


def test_0009_makes_image_names_unique_per_owner(tmp_path) -> None:
    check_image_names_per_owner_after_0009("sqlite:///%s" % (tmp_path / "m.sqlite"))
