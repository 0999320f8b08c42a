"""Tables of the scheduler's store (SQLAlchemy 2.0 declarative).

The schema is owned by the alembic migrations in ``migrations/``; a test
checks that these models and the migrated database agree.
"""

from __future__ import annotations

import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Host(Base):
    """A compute host as its agent last reported it, with its claims."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    vcpus: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    # NOTE: the *_used counters are the claims. They are changed only by
    # conditional UPDATEs (see store.claim), which is what keeps two
    # schedulers from double-booking a host.
    vcpus_used: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb_used: Mapped[int] = mapped_column(Integer, default=0)
    disk_gb_used: Mapped[int] = mapped_column(Integer, default=0)
    capabilities: Mapped[dict] = mapped_column(JSON, default=dict)
    #: Builds that failed here since the last one that succeeded (a weigher
    #: puts such hosts last).
    failed_builds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    reported_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)


class Flavor(Base):
    """A named size of server."""

    __tablename__ = "flavors"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    root_gb: Mapped[int] = mapped_column(Integer)
    extra_specs: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class Image(Base):
    """An imported image: a disk file in the image store, optionally with a kernel to boot."""

    __tablename__ = "images"
    # NOTE: a name is unique within its owner's scope only: among the public
    # images, and within one project; a cloud-wide unique name told a project
    # the names of another's private images (and let it squat a public one).
    __table_args__ = (
        Index(
            "uq_images_public_name",
            "name",
            unique=True,
            sqlite_where=text("project IS NULL"),
            postgresql_where=text("project IS NULL"),
        ),
        Index("uq_images_project_name", "project", "name", unique=True),
    )

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    disk_format: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(4096))
    size_bytes: Mapped[int] = mapped_column(Integer)
    virtual_size: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str] = mapped_column(String(64))
    kernel_path: Mapped[str | None] = mapped_column(String(4096))
    initrd_path: Mapped[str | None] = mapped_column(String(4096))
    cmdline: Mapped[str | None] = mapped_column(String(2048))
    properties: Mapped[dict] = mapped_column(JSON, default=dict)
    #: The project that owns it (made from its server), None for a public image.
    project: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class Instance(Base):
    """A server. Rows are soft-deleted so that a repeated delete stays a no-op."""

    __tablename__ = "instances"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    flavor_name: Mapped[str] = mapped_column(String(63))
    # NOTE: the flavor's size is copied, so deleting or changing a flavor
    # never changes what an existing server claims.
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    root_gb: Mapped[int] = mapped_column(Integer)
    extra_specs: Mapped[dict] = mapped_column(JSON, default=dict)
    # NOTE: no foreign key: an image may be deleted once no live server uses
    # it, while deleted servers keep naming it.
    image_uuid: Mapped[str] = mapped_column(String(36))
    user_data: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255), index=True)
    vm_state: Mapped[str] = mapped_column(String(16))
    task_state: Mapped[str | None] = mapped_column(String(16))
    power_state: Mapped[str] = mapped_column(String(16), default="nostate")
    fault: Mapped[str | None] = mapped_column(String(1024))
    #: The storage backend of the root disk (None: the host's root_backend).
    root_backend: Mapped[str | None] = mapped_column(String(63))
    #: ``linked`` or ``full``: how the root disk is made from the image.
    root_clone: Mapped[str] = mapped_column(String(8), default="linked", server_default="linked")
    #: Failed builds of this server: ``[{"host": ..., "fault": ...}]``, oldest first.
    attempts: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")
    #: It holds a claim on ``host`` (set with the claim, cleared by the one
    #: release; the conditional UPDATE of that flag makes a release count once).
    claimed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    #: The availability zone asked for (None: any).
    availability_zone: Mapped[str | None] = mapped_column(String(63))
    #: The server group it belongs to (affinity policies).
    group_uuid: Mapped[str | None] = mapped_column(String(36), index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)


class Volume(Base):
    """A volume on a storage backend: a data disk, or a server's boot disk.

    ``host`` is where the volume was made; a volume on a local backend can
    only be attached to servers on that host. Rows are soft-deleted.
    """

    __tablename__ = "volumes"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    size_gb: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(63))
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    image_uuid: Mapped[str | None] = mapped_column(String(36))
    host: Mapped[str | None] = mapped_column(String(255))
    # NOTE: what the backend answered (pool/name, LUN, path...) and its
    # format; the agents need both to build the disk, the scheduler never
    # interprets them.
    location: Mapped[str | None] = mapped_column(String(1024))
    format: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    attached_to: Mapped[str | None] = mapped_column(String(36), index=True)
    target_dev: Mapped[str | None] = mapped_column(String(16))
    boot: Mapped[bool] = mapped_column(Boolean, default=False)
    fault: Mapped[str | None] = mapped_column(String(1024))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)


class Network(Base):
    """A tenant network: its segment on the wire and its one IPv4 subnet.

    ``segment_key`` (``vxlan:5000``, ``vlan:physnet1:100``, ``flat:physnet1``)
    is unique: the database itself refuses a segment taken twice, also when
    two schedulers allocate at the same moment.
    """

    __tablename__ = "networks"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    type: Mapped[str] = mapped_column(String(16))
    segment: Mapped[int | None] = mapped_column(Integer)
    physnet: Mapped[str | None] = mapped_column(String(63))
    segment_key: Mapped[str] = mapped_column(String(96), unique=True)
    cidr: Mapped[str] = mapped_column(String(43))
    gateway: Mapped[str | None] = mapped_column(String(39))
    mtu: Mapped[int] = mapped_column(Integer)
    #: Bumped with every change of its ports' hosts: agents apply a topology
    #: only if it is newer than the last one they applied (fan-outs race).
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class Port(Base):
    """A server's interface on a network: its MAC and fixed IP (both unique)."""

    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("network_uuid", "ip", name="uq_ports_network_ip"),)

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    network_uuid: Mapped[str] = mapped_column(String(36), ForeignKey("networks.uuid"), index=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    device_index: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    ip: Mapped[str] = mapped_column(String(39))
    host: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class Aggregate(Base):
    """A named set of hosts with metadata (matched against flavor extra
    specs), and optionally the availability zone of its hosts."""

    __tablename__ = "aggregates"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    availability_zone: Mapped[str | None] = mapped_column(String(63))
    properties: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class AggregateHost(Base):
    """A host's membership of an aggregate."""

    __tablename__ = "aggregate_hosts"

    aggregate: Mapped[str] = mapped_column(
        String(63), ForeignKey("aggregates.name"), primary_key=True
    )
    host: Mapped[str] = mapped_column(String(255), primary_key=True)


class ServerGroup(Base):
    """Servers placed together (affinity) or apart (anti-affinity), hard or soft."""

    __tablename__ = "server_groups"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    policy: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
