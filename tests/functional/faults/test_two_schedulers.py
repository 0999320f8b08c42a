"""Two schedulers started together on a fresh PostgreSQL database both start
(issue 13 item 12: one exited, both having run the first migration)."""

from __future__ import annotations

import threading
import uuid as uuidlib

from compute_driver.scheduler.database import Database
from tests.functional.scheduler.postgres import PostgresCluster
from tests.functional.scheduler.sim_cloud import sim_cloud

#: A guard against a hang, never a measure of speed.
HANG = 120


def test_concurrent_migrations_of_a_fresh_database_all_succeed(postgres: PostgresCluster) -> None:
    name = "race_" + uuidlib.uuid4().hex[:8]
    url = postgres.create_database(name)
    count = 4
    gate = threading.Barrier(count)
    errors: list[BaseException] = []

    def migrate() -> None:
        db = Database(url)
        try:
            gate.wait(HANG)
            db.upgrade()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            db.engine.dispose()

    threads = [threading.Thread(target=migrate) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG)
    assert not errors, "%d of %d migrations failed: %s" % (len(errors), count, errors[0])
    tables = postgres.psql(
        url.split("/")[3].split("?")[0], "SELECT version_num FROM alembic_version"
    )
    assert len(tables.split()) == 1


def test_two_schedulers_started_together_on_a_fresh_database(postgres: PostgresCluster) -> None:
    url = postgres.create_database("two_" + uuidlib.uuid4().hex[:8])
    with sim_cloud(database=url) as cloud:
        cloud.start_scheduler("sched-0", wait=False)
        cloud.start_scheduler("sched-1", wait=False)
        cloud.wait_for_log("sched-0", "compute-scheduler listening on topic")
        cloud.wait_for_log("sched-1", "compute-scheduler listening on topic")
        cloud.check_alive()
