"""Fixtures that run the real thing: RabbitMQ, libvirtd + QEMU, our two services.

Every test session gets its own RabbitMQ vhost, host name and state
directory, so it never sees another run's messages or files; all of it is
removed at the end, domains included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from cloud_env import (
    CONFIG,
    LIBVIRT_URI,
    STATE_ROOT,
    Cloud,
    add_role_users,
    add_vhost,
    delete_vhost,
    guest_import_args,
    remove_domains_of,
    require_services,
    write_service_configs,
)


@pytest.fixture(scope="session")
def cloud() -> Iterator[Cloud]:
    require_services()
    tag = uuid.uuid4().hex[:8]
    os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
    state = os.path.join(STATE_ROOT, "functional-" + tag)
    # NOTE: 0755, not pytest's 0700 tmp dirs: QEMU runs as libvirt-qemu and
    # must reach the disks and config drives below this directory.
    os.makedirs(state, mode=0o755)
    config_file = os.path.join(state, "compute-driver.conf")
    # NOTE: a vhost of its own, not just an exchange of its own: queue names
    # are per vhost, so two sessions with different exchanges would still
    # both consume the one "scheduler" queue and answer each other's calls.
    vhost = "cdft-" + tag
    add_vhost(vhost)
    # NOTE: each service its own broker user (tools/rabbitmq-users.sh), as
    # deployed: computectl the client's, which can only call the scheduler.
    roles = add_role_users(vhost, tag, "ft-" + tag)
    with open(config_file, "w") as f:
        f.write(
            CONFIG.format(
                host="ft-" + tag,
                state=state,
                transport_url=roles.urls["client"],
                exchange="compute_driver",
                uri=LIBVIRT_URI,
            )
        )
        # NOTE: the client signs its calls (a scheduler with a secret refuses
        # unsigned ones); the services read this file too, but only a client
        # uses the key.
        f.write("\n[client]\nkey = %s\n" % roles.client_key())
    env = Cloud(
        state=state,
        host="ft-" + tag,
        config_file=config_file,
        service_configs=write_service_configs(state, roles, "ft-" + tag),
        roles=roles,
    )
    env.start("compute-scheduler")
    env.start("compute-agent")
    try:
        env.wait_for_host("up")
        yield env
    finally:
        try:
            listed = env.ctl("server", "list")
            for server in listed.json() if listed.rc == 0 else []:
                env.ctl("server", "delete", server["uuid"], "--wait", timeout=120)
        except subprocess.TimeoutExpired:
            pass  # NOTE: the domains go below; the services, vhost and users must go too
        env.stop("compute-agent")
        env.stop("compute-scheduler")
        delete_vhost(vhost)
        roles.delete()
        remove_domains_of(state)
        if not os.environ.get("CD_TEST_KEEP_STATE"):
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def guest_image(cloud: Cloud) -> dict[str, Any]:
    """The tiny test guest, imported once per session."""
    image = cloud.ok(*guest_import_args())
    return image


@pytest.fixture
def libvirt_conn() -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(LIBVIRT_URI)
    yield conn
    conn.close()
