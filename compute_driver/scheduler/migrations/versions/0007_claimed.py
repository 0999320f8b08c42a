"""Whether a server holds a claim on its host, as a column.

A claim is released by flipping it (compare-and-swap), so two releases of
one server racing each other (a failure report and a delete) subtract its
resources once, whatever the database's isolation.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(
            sa.Column("claimed", sa.Boolean, nullable=False, server_default=sa.false())
        )
    # NOTE: what the old rule meant: a live server on a host, not in ERROR.
    op.execute(
        "UPDATE instances SET claimed = (host IS NOT NULL AND vm_state <> 'error' "
        "AND deleted = false)"
    )
