"""The scheduler database's plumbing: engine, transactions, schema and lookup by ref.

What every store module shares: :class:`Database` opens the engine at one
SQLAlchemy URL (tuned for SQLite), hands out transactions and upgrades the
schema; :func:`find_by_ref` finds a row by key or unique name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from compute_driver import exception
from compute_driver.rpc.context import RequestContext
from compute_driver.scheduler import scope

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")

#: The PostgreSQL advisory lock migrations hold (a number of ours: "cdmi").
MIGRATION_LOCK = 0x63646D69

#: What the database drivers say when their disk is full.
_DISK_FULL = (
    "database or disk is full",  # SQLite (SQLITE_FULL)
    "no space left on device",  # PostgreSQL (ENOSPC, in its words)
    "could not extend file",  # PostgreSQL
)


class Database:
    """The scheduler database at one SQLAlchemy URL: its transactions and schema."""

    def __init__(self, url: str, busy_timeout: int = 30) -> None:
        """
        :raises InvalidConfig: a SQLite file whose directory does not exist.
        """
        self.url = url
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"timeout": busy_timeout, "check_same_thread": False}
            path = sa.engine.make_url(url).database
            if path and path != ":memory:" and not path.startswith("file:"):
                # NOTE: SQLite makes a missing file, and we used to make a
                # missing directory too: a mistyped path started a new,
                # empty cloud. The directory must exist.
                directory = os.path.dirname(os.path.abspath(path))
                if not os.path.isdir(directory):
                    raise exception.InvalidConfig(
                        reason="the directory %s of SQLite database %s does not exist"
                        % (directory, path)
                    )
                _private_sqlite_file(path)
        self.engine = sa.create_engine(url, connect_args=connect_args, future=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # NOTE: SQLite takes one writer at a time, and a writer that finds
        # the file locked sleeps in SQLite's busy handler (1, 2, 5, 10 ...
        # 100 ms) instead of waking when the lock is free: with a dozen RPC
        # threads writing, the scheduler idled in those sleeps. Our own
        # threads queue on a lock instead; the busy timeout is left for
        # other processes.
        self._turn: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if url.startswith("sqlite") else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error.

        :raises DatabaseUnavailable: its disk is full (which, how full).
        """
        # NOTE: the disk check outside the transaction: a full disk is
        # often found at the commit.
        with self._turn, self._disk_full_said(), self._sessions.begin() as session:
            yield session

    @contextlib.contextmanager
    def connection(self) -> Iterator[sa.Connection]:
        """A transaction on a bare connection, for Core statements: committed
        on success, rolled back on any error.

        :raises DatabaseUnavailable: its disk is full (which, how full).
        """
        with self._turn, self._disk_full_said(), self.engine.begin() as connection:
            yield connection

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent).

        NOTE: on PostgreSQL under an advisory lock: two schedulers started
        together on a new database both created the first tables, and one
        exited. The second now waits and finds the schema at its head.
        SQLite takes one writer at a time anyway.
        """
        config = AlembicConfig()
        config.set_main_option("script_location", MIGRATIONS)
        with self._disk_full_said(), self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Released at the end of this transaction, whatever happens.
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            config.attributes["connection"] = connection
            alembic_command.upgrade(config, "head")

    @contextlib.contextmanager
    def _disk_full_said(self) -> Iterator[None]:
        """Turn a driver's "disk full" into an error that says which disk, how full."""
        try:
            yield
        except sa_exc.OperationalError as exc:
            text = str(exc.orig or exc).strip()
            if not any(words in text.lower() for words in _DISK_FULL):
                raise
            raise exception.DatabaseUnavailable(reason=self._disk_full(text)) from exc
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise exception.DatabaseUnavailable(reason=self._disk_full(str(exc))) from exc

    def _disk_full(self, said: str) -> str:
        url = sa.engine.make_url(self.url)
        path = url.database if url.drivername.startswith("sqlite") else None
        if not path or path == ":memory:" or path.startswith("file:"):
            # A server's disk: only it can say which (PostgreSQL names the file).
            return "its disk is full: %s (database %s)" % (
                said.splitlines()[0],
                url.render_as_string(hide_password=True),
            )
        directory = os.path.dirname(os.path.abspath(path))
        try:
            stat = os.statvfs(directory)
        except OSError as exc:
            return "the disk of %s is full (%s; %s)" % (path, said, exc.strerror)
        return "the disk of %s is full: %s free of %s in %s (%s)" % (
            path,
            _size(stat.f_bavail * stat.f_frsize),
            _size(stat.f_blocks * stat.f_frsize),
            directory,
            said.splitlines()[0],
        )


def find_by_ref(
    session: Session,
    model: Any,
    ref: str,
    name_column: Any,
    plural: str,
    live: Any = None,
    context: RequestContext | None = None,
) -> Any:
    """The row of ``model`` whose key is ``ref``, else the one live row named
    ``ref``, among the rows ``context`` sees (``scope.py``: its project's).

    :param live: an extra condition for the lookup by name (e.g. not deleted).
    :param context: the caller's; None for the scheduler's own lookups.
    :returns: the row, or None (also when it is another project's).
    :raises Conflict: several rows the context sees have that name (the
        caller must use the key).
    """
    row = session.get(model, ref)
    if row is not None and scope.sees(context, row.project):
        return row
    query = select(model).where(name_column == ref)
    for condition in (live, scope.name_condition(context, model.project)):
        if condition is not None:
            query = query.where(condition)
    matches = session.scalars(query).all()
    if len(matches) > 1:
        raise exception.Conflict(
            reason="%d %s are named %s; use a UUID" % (len(matches), plural, ref)
        )
    return matches[0] if matches else None


def _size(count: int) -> str:
    """``count`` bytes in MiB, for a person."""
    return "%.1f MiB" % (count / 1024**2)


def _private_sqlite_file(path: str) -> None:
    """Make the SQLite file readable by its owner only (0600), creating it
    empty if missing; SQLite gives its journal and WAL files the same mode.

    NOTE: the database holds every tenant's user data and host credentials.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # NOTE: WAL lets readers (list, show) run while a claim writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    # NOTE: in WAL mode NORMAL syncs at checkpoints, not at every commit: a
    # commit survives a crash of any process; only a power cut can lose the
    # last ones (never corrupt the file). One fsync per claim was most of
    # a create's time on a slow disk.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
