"""The prebuilt Core statements of a server create's steps.

Flavor and image, insert, claim and the agent's report run these on a bare
connection (see :class:`~compute_driver.scheduler.store.Store`): each is built
once, with bound parameters, at import.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import select, update

from compute_driver.scheduler.models import Flavor, Host, Image, Instance
from compute_driver.scheduler.records import LISTED_COLUMNS

#: A server's listed columns and whether it is deleted, by uuid.
INSTANCE_BY_UUID = select(*LISTED_COLUMNS, Instance.deleted).where(
    Instance.uuid == sa.bindparam("uuid")
)
#: A flavor, by name.
FLAVOR_BY_NAME = select(*Flavor.__table__.c).where(Flavor.name == sa.bindparam("flavor"))
#: An image, by uuid.
IMAGE_BY_UUID = select(*Image.__table__.c).where(Image.uuid == sa.bindparam("image"))
#: The image a project names: its own of that name, else the public one.
IMAGE_BY_NAME_IN_PROJECT = (
    select(*Image.__table__.c)
    .where(
        Image.name == sa.bindparam("image"),
        sa.or_(Image.project == sa.bindparam("project"), Image.project.is_(None)),
    )
    .order_by(Image.project.is_(None))
    .limit(1)
)
#: A new server; the values given name its columns.
INSERT_INSTANCE = sa.insert(Instance)
#: A server's columns, by uuid; the SET clause is the columns the parameters name.
UPDATE_INSTANCE = update(Instance).where(Instance.uuid == sa.bindparam("by_uuid"))
#: A build ended on a host: its failed-builds count starts again.
RESET_FAILED_BUILDS = (
    update(Host)
    .where(Host.name == sa.bindparam("host"), Host.failed_builds != 0)
    .values(failed_builds=0)
)

# NOTE: a claim's two UPDATEs are built once, with bound parameters: building
# and caching a statement per claim was a fifth of the scheduler's CPU.
CLAIM_HOST = (
    update(Host)
    .where(
        Host.name == sa.bindparam("claim_host"),
        Host.enabled.is_(True),
        Host.vcpus_used + sa.bindparam("claim_vcpus")
        <= Host.vcpus * sa.bindparam("claim_cpu_ratio"),
        Host.memory_mb_used + sa.bindparam("claim_memory_mb")
        <= (Host.memory_mb - sa.bindparam("claim_reserved_mb")) * sa.bindparam("claim_ram_ratio"),
        Host.disk_gb_used + sa.bindparam("claim_disk_gb")
        <= Host.disk_gb * sa.bindparam("claim_disk_ratio"),
    )
    .values(
        vcpus_used=Host.vcpus_used + sa.bindparam("claim_vcpus"),
        memory_mb_used=Host.memory_mb_used + sa.bindparam("claim_memory_mb"),
        disk_gb_used=Host.disk_gb_used + sa.bindparam("claim_disk_gb"),
    )
    .execution_options(synchronize_session=False)
)
PLACE_INSTANCE = (
    update(Instance)
    .where(
        Instance.uuid == sa.bindparam("claim_uuid"),
        Instance.deleted.is_(False),
        Instance.vm_state == "building",
        Instance.task_state == "scheduling",
        Instance.host.is_(None),
    )
    .values(
        host=sa.bindparam("claim_host"),
        task_state="spawning",
        claimed=True,
        updated_at=sa.bindparam("claim_now"),
    )
    .execution_options(synchronize_session=False)
)
