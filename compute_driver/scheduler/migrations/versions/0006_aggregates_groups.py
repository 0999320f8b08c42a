"""Host aggregates, availability zones, server groups; network topology revisions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aggregates",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("availability_zone", sa.String(63)),
        sa.Column("properties", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "aggregate_hosts",
        sa.Column(
            "aggregate", sa.String(63), sa.ForeignKey("aggregates.name"), primary_key=True
        ),
        sa.Column("host", sa.String(255), primary_key=True),
    )
    op.create_table(
        "server_groups",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, index=True),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("policy", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("availability_zone", sa.String(63)))
        batch.add_column(sa.Column("group_uuid", sa.String(36)))
        batch.create_index("ix_instances_group_uuid", ["group_uuid"])
    with op.batch_alter_table("networks") as batch:
        batch.add_column(sa.Column("revision", sa.Integer, nullable=False, server_default="0"))
