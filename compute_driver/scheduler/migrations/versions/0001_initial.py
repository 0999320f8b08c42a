"""The first schema: hosts, flavors, images, instances.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


DEFAULT_FLAVORS = [
    # name, vcpus, memory_mb, root_gb
    ("m1.nano", 1, 128, 1),
    ("m1.tiny", 1, 512, 1),
    ("m1.small", 1, 2048, 20),
    ("m1.medium", 2, 4096, 40),
    ("m1.large", 4, 8192, 80),
]


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("disabled_reason", sa.String(255)),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=False),
        sa.Column("disk_gb", sa.Integer, nullable=False),
        sa.Column("vcpus_used", sa.Integer, nullable=False),
        sa.Column("memory_mb_used", sa.Integer, nullable=False),
        sa.Column("disk_gb_used", sa.Integer, nullable=False),
        sa.Column("capabilities", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("reported_at", sa.DateTime),
    )
    op.create_table(
        "flavors",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=False),
        sa.Column("root_gb", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    now = sa.func.now()
    flavors = sa.table(
        "flavors",
        sa.column("name", sa.String),
        sa.column("vcpus", sa.Integer),
        sa.column("memory_mb", sa.Integer),
        sa.column("root_gb", sa.Integer),
        sa.column("created_at", sa.DateTime),
    )
    op.execute(
        flavors.insert().values(
            [
                {"name": n, "vcpus": c, "memory_mb": m, "root_gb": d, "created_at": now}
                for n, c, m, d in DEFAULT_FLAVORS
            ]
        )
    )
    op.create_table(
        "images",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("disk_format", sa.String(16), nullable=False),
        sa.Column("path", sa.String(4096), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("virtual_size", sa.Integer, nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("kernel_path", sa.String(4096)),
        sa.Column("initrd_path", sa.String(4096)),
        sa.Column("cmdline", sa.String(2048)),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "instances",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, index=True),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("flavor_name", sa.String(63), nullable=False),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=False),
        sa.Column("root_gb", sa.Integer, nullable=False),
        sa.Column("image_uuid", sa.String(36), nullable=False),
        sa.Column("user_data", sa.Text),
        sa.Column("host", sa.String(255), index=True),
        sa.Column("vm_state", sa.String(16), nullable=False),
        sa.Column("task_state", sa.String(16)),
        sa.Column("power_state", sa.String(16), nullable=False),
        sa.Column("fault", sa.String(1024)),
        sa.Column("deleted", sa.Boolean, nullable=False, index=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("deleted_at", sa.DateTime),
    )
