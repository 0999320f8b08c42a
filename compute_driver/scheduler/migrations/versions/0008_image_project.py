"""The project an image belongs to (None: a public image an admin imported).

Images made from a server belong to that server's project, which alone
sees them; existing images stay public.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("project", sa.String(64), nullable=True))
        batch.create_index("ix_images_project", ["project"])
