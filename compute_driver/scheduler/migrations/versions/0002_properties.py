"""Flavor extra specs and image properties (guest configuration).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flavors") as batch:
        batch.add_column(sa.Column("extra_specs", sa.JSON, nullable=False, server_default="{}"))
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("properties", sa.JSON, nullable=False, server_default="{}"))
    # NOTE: a server keeps the extra specs its flavor had when it was created.
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("extra_specs", sa.JSON, nullable=False, server_default="{}"))
