"""Alembic environment: runs migrations on the connection store.upgrade() passes."""

from alembic import context

from compute_driver.scheduler.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    from sqlalchemy import create_engine

    connection = create_engine(str(config.get_main_option("sqlalchemy.url"))).connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
