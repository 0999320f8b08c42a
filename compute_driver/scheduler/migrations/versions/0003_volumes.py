"""Volumes, and the root-disk backend of a server.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, index=True),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("size_gb", sa.Integer, nullable=False),
        sa.Column("backend", sa.String(63), nullable=False),
        sa.Column("shared", sa.Boolean, nullable=False),
        sa.Column("image_uuid", sa.String(36)),
        sa.Column("host", sa.String(255)),
        sa.Column("location", sa.String(1024)),
        sa.Column("format", sa.String(16)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attached_to", sa.String(36), index=True),
        sa.Column("target_dev", sa.String(16)),
        sa.Column("boot", sa.Boolean, nullable=False),
        sa.Column("fault", sa.String(1024)),
        sa.Column("deleted", sa.Boolean, nullable=False, index=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("deleted_at", sa.DateTime),
    )
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("root_backend", sa.String(63)))
