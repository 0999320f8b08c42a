"""Tenant networks and ports.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "networks",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, index=True),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("segment", sa.Integer),
        sa.Column("physnet", sa.String(63)),
        sa.Column("segment_key", sa.String(96), nullable=False, unique=True),
        sa.Column("cidr", sa.String(43), nullable=False),
        sa.Column("gateway", sa.String(39)),
        sa.Column("mtu", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "ports",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column(
            "network_uuid",
            sa.String(36),
            sa.ForeignKey("networks.uuid"),
            nullable=False,
            index=True,
        ),
        sa.Column("instance_uuid", sa.String(36), nullable=False, index=True),
        sa.Column("device_index", sa.Integer, nullable=False),
        sa.Column("mac", sa.String(17), nullable=False, unique=True),
        sa.Column("ip", sa.String(39), nullable=False),
        sa.Column("host", sa.String(255), index=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("network_uuid", "ip", name="uq_ports_network_ip"),
    )
