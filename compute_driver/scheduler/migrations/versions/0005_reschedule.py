"""Build attempts of a server, its root clone mode, and failed builds per host.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("attempts", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(
            sa.Column("root_clone", sa.String(8), nullable=False, server_default="linked")
        )
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(
            sa.Column("failed_builds", sa.Integer, nullable=False, server_default="0")
        )
