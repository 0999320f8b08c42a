"""Twenty simulated hosts, one real scheduler, the real RabbitMQ: 60 servers placed and removed."""

from __future__ import annotations

import collections

from tests.functional.scheduler.sim_cloud import (
    CPU_RATIO,
    FLAVOR,
    SERVERS_PER_HOST,
    create_many,
    host_usage,
    sim_cloud,
)

HOSTS = 20
SERVERS = 60
PROJECT = "many-hosts"


def test_sixty_servers_on_twenty_hosts() -> None:
    with sim_cloud() as cloud:
        cloud.start_scheduler()
        names = cloud.start_agents(HOSTS)
        cloud.wait_for_hosts(names)
        flavor, image = cloud.prepare_catalog()

        records, errors = create_many(cloud, SERVERS, flavor, image, PROJECT, threads=8)
        assert not errors, "creates failed: %s" % {u: str(e) for u, e in errors.items()}
        servers = cloud.wait_settled(PROJECT, set(records))
        assert len(servers) == SERVERS
        not_active = [s for s in servers.values() if s["vm_state"] != "active"]
        assert not not_active, "not ACTIVE: %s" % not_active[:3]

        per_host = collections.Counter(s["host"] for s in servers.values())
        assert set(per_host) <= set(names)
        # NOTE: the weigher puts each server on the host with the most free
        # RAM; concurrent creates may see the same snapshot and land together,
        # so a spread is asked for, not a perfect one.
        assert len(per_host) >= HOSTS * 3 // 4, "servers per host: %s" % dict(per_host)
        assert max(per_host.values()) <= SERVERS_PER_HOST, dict(per_host)

        hosts = {h["name"]: h for h in cloud.call(cloud.client.list_hosts) if h["name"] in names}
        for name, host in hosts.items():
            assert host["vcpus_used"] <= host["vcpus"] * CPU_RATIO, host
            # The claims are exactly what the servers on the host hold.
            assert host["vcpus_used"] == per_host[name] * FLAVOR["vcpus"], host
            assert host["memory_mb_used"] == per_host[name] * FLAVOR["memory_mb"], host

        cloud.delete_all(PROJECT)
        usage = host_usage([h for h in cloud.call(cloud.client.list_hosts) if h["name"] in names])
        assert usage == {name: (0, 0, 0) for name in names}
