"""The migrations on a real PostgreSQL database (the unit tests run them on SQLite)."""

from __future__ import annotations

import uuid as uuidlib

from tests.functional.scheduler.postgres import PostgresCluster
from tests.unit.scheduler.test_migrations import check_image_names_per_owner_after_0009


def test_0009_makes_image_names_unique_per_owner(postgres: PostgresCluster) -> None:
    url = postgres.create_database("migrate_" + uuidlib.uuid4().hex[:8])
    check_image_names_per_owner_after_0009(url)
