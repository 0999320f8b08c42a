"""Two schedulers on one PostgreSQL database race 200 creates for room for 100.

Each claim is one conditional UPDATE (``Store.claim``): whichever scheduler
gets a request, a host is never booked past its capacity, and every create
either gets a host or a clean "no valid host".
"""

from __future__ import annotations

import collections
import uuid as uuidlib

from compute_driver import exception
from tests.functional.scheduler.postgres import PostgresCluster
from tests.functional.scheduler.sim_cloud import (
    CPU_RATIO,
    FLAVOR,
    SERVERS_PER_HOST,
    create_many,
    sim_cloud,
)

HOSTS = 10
CREATES = 200
ROOM = HOSTS * SERVERS_PER_HOST
PROJECT = "pg-race"


def _rows(postgres: PostgresCluster, database: str, sql: str) -> list[list[str]]:
    return [line.split("|") for line in postgres.psql(database, sql).splitlines() if line]


def test_two_schedulers_never_overcommit(postgres: PostgresCluster) -> None:
    database = "claims_" + uuidlib.uuid4().hex[:8]
    url = postgres.create_database(database)
    with sim_cloud(database=url) as cloud:
        # NOTE: one after the other: each migrates the schema at start (see
        # the report on concurrent first starts).
        cloud.start_scheduler("sched-a")
        names = cloud.start_agents(HOSTS)
        cloud.wait_for_hosts(names)
        cloud.start_scheduler("sched-b")
        flavor, image = cloud.prepare_catalog()

        records, errors = create_many(cloud, CREATES, flavor, image, PROJECT, threads=40)

        others = {u: e for u, e in errors.items() if not isinstance(e, exception.NoValidHost)}
        assert not others, "creates failed otherwise than 'no valid host': %s" % others
        assert (len(records), len(errors)) == (ROOM, CREATES - ROOM)
        for error in errors.values():
            assert "No valid host" in str(error), error

        # Both schedulers took part (the bus hands requests round-robin).
        for name in ("sched-a", "sched-b"):
            with open(cloud.log_path(name)) as f:
                assert " placed on " in f.read(), "%s placed nothing" % name

        servers = cloud.wait_settled(PROJECT, set(records) | set(errors))
        active = [s for s in servers.values() if s["vm_state"] == "active"]
        failed = [s for s in servers.values() if s["vm_state"] == "error"]
        assert len(active) == ROOM and len(failed) == CREATES - ROOM
        assert all(s["host"] is None and "No valid host" in s["fault"] for s in failed)
        per_host = collections.Counter(s["host"] for s in active)
        assert per_host == {n: SERVERS_PER_HOST for n in names}

        # The database agrees: claims equal what the active servers hold, none past capacity.
        capacity = int(16 * CPU_RATIO)
        hosts = _rows(
            postgres,
            database,
            "SELECT h.name, h.vcpus, h.vcpus_used, h.memory_mb_used, count(i.uuid),"
            " coalesce(sum(i.vcpus), 0), coalesce(sum(i.memory_mb), 0)"
            " FROM hosts h LEFT JOIN instances i ON i.host = h.name AND NOT i.deleted"
            " AND i.vm_state <> 'error' GROUP BY h.name ORDER BY h.name",
        )
        assert [h[0] for h in hosts] == names
        for name, vcpus, used, mem_used, count, sum_vcpus, sum_mem in hosts:
            assert int(vcpus) * CPU_RATIO == capacity
            assert int(used) <= capacity, (name, used)
            assert (int(used), int(mem_used)) == (int(sum_vcpus), int(sum_mem)), name
            assert int(count) == SERVERS_PER_HOST, name
        placed = _rows(
            postgres,
            database,
            "SELECT count(*) FROM instances WHERE host IS NOT NULL AND vm_state = 'active'",
        )
        assert placed == [[str(ROOM)]]

        cloud.delete_all(PROJECT)
        usage = _rows(
            postgres,
            database,
            "SELECT sum(vcpus_used), sum(memory_mb_used), sum(disk_gb_used) FROM hosts",
        )
        assert usage == [["0", "0", "0"]]
        # Flavor sanity: the numbers above assume this flavor.
        assert FLAVOR["vcpus"] * SERVERS_PER_HOST == capacity
