"""Image names unique per owner: among public images, and within a project.

A cloud-wide unique name told a project that another project had a private
image of that name, and let a project take a name before the operator
imported a public image of it. The unique constraint on ``images.name``
becomes two unique indexes: ``name`` among the images of no project
(partial: ``project IS NULL``), and ``(project, name)``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PUBLIC = sa.text("project IS NULL")


def upgrade() -> None:
    # NOTE: 0001 left the constraint unnamed: PostgreSQL named it
    # (images_name_key), SQLite did not; the naming convention gives the
    # SQLite one a name batch mode (a table copy) can drop.
    unique = [
        constraint["name"]
        for constraint in sa.inspect(op.get_bind()).get_unique_constraints("images")
        if constraint["column_names"] == ["name"]
    ]
    with op.batch_alter_table(
        "images", naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}
    ) as batch:
        for name in unique:
            batch.drop_constraint(name or "uq_images_name", type_="unique")
        batch.create_index(
            "uq_images_public_name",
            ["name"],
            unique=True,
            sqlite_where=PUBLIC,
            postgresql_where=PUBLIC,
        )
        batch.create_index("uq_images_project_name", ["project", "name"], unique=True)
