"""A private, throw-away PostgreSQL cluster for functional tests and benches.

``initdb`` into a new directory, ``pg_ctl start`` listening only on a unix
socket in that directory (no TCP port, so it never meets another run's or
the machine's own server), databases made on demand, and everything
stopped and removed on the way out, also after a failure.

PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` user (``setpriv``); as anyone else it runs as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

#: Where Debian's postgresql-NN packages put the server programs.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres", "createdb")
INSTALL_HINT = (
    "the PostgreSQL server is not installed: apt-get install postgresql-15 python3-psycopg2 "
    "(tools/install-deps.sh)"
)
DRIVER_HINT = "the psycopg2 driver is missing: apt-get install python3-psycopg2"
#: The port only names the socket file (.s.PGSQL.<port>) in our private directory.
PORT = 5432
START_TIMEOUT = 60
#: Settings for a cluster whose data nobody keeps: fast, not crash-safe.
THROWAWAY_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
}


class PostgresMissing(RuntimeError):
    """The server programs or the Python driver are not installed (the message says what to do)."""


def find_bin_dir() -> str:
    """The newest ``/usr/lib/postgresql/NN/bin`` that has every server program.

    :raises PostgresMissing: no PostgreSQL server is installed.
    """
    candidates = sorted(
        glob.glob(DEBIAN_BIN_GLOB), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    for bin_dir in candidates:
        if all(os.access(os.path.join(bin_dir, p), os.X_OK) for p in SERVER_PROGRAMS):
            return bin_dir
    raise PostgresMissing(INSTALL_HINT)


def check_driver() -> None:
    """:raises PostgresMissing: SQLAlchemy's ``postgresql+psycopg2`` driver is not importable."""
    try:
        import psycopg2  # noqa: F401
    except ImportError as exc:
        raise PostgresMissing(DRIVER_HINT) from exc


@dataclass
class PostgresCluster:
    """A running private cluster: its directory, socket directory and programs."""

    bin_dir: str
    base: str
    run_as: list[str]

    @property
    def data_dir(self) -> str:
        return os.path.join(self.base, "data")

    @property
    def socket_dir(self) -> str:
        return self.base

    @property
    def log_file(self) -> str:
        return os.path.join(self.base, "postgres.log")

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` over the private socket."""
        return "postgresql+psycopg2://postgres@/%s?host=%s&port=%d" % (
            database,
            self.socket_dir,
            PORT,
        )

    def _program(self, name: str, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [*self.run_as, os.path.join(self.bin_dir, name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                "%s %s failed (%d): %s%s"
                % (name, " ".join(args), done.returncode, done.stderr, self.tail())
            )
        return done.stdout

    def create_database(self, name: str) -> str:
        """Create ``name``; returns its SQLAlchemy URL."""
        self._program("createdb", "-h", self.socket_dir, "-p", str(PORT), "-U", "postgres", name)
        return self.url(name)

    def psql(self, database: str, sql: str) -> str:
        """Run ``sql`` with psql; returns its unaligned, tuples-only output."""
        psql = os.path.join(self.bin_dir, "psql")
        if not os.access(psql, os.X_OK):
            psql = shutil.which("psql") or psql
        done = subprocess.run(
            [
                *self.run_as,
                psql,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir,
                "-p",
                str(PORT),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError("psql %r failed: %s" % (sql, done.stderr))
        return done.stdout

    def tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_file, errors="replace") as f:
                return "\n--- postgres.log ---\n" + "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def _run_as() -> tuple[list[str], int, int]:
    """The command prefix that runs the server's programs, and that user's uid and gid."""
    if os.geteuid() != 0:
        return [], os.geteuid(), os.getegid()
    try:
        user = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresMissing(INSTALL_HINT + " (there is no 'postgres' user)") from exc
    prefix = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    return prefix, user.pw_uid, user.pw_gid


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster for the length of the ``with`` block.

    :raises PostgresMissing: the server or the driver is not installed.
    """
    bin_dir = find_bin_dir()
    check_driver()
    run_as, uid, gid = _run_as()
    # NOTE: not under pytest's tmp dirs: their 0700 parents would keep the
    # postgres user out. mkdtemp makes it 0700, and it is given to that user.
    base = tempfile.mkdtemp(prefix="cd-postgres-")
    cluster = PostgresCluster(bin_dir=bin_dir, base=base, run_as=run_as)
    started = False
    try:
        os.chown(base, uid, gid)
        cluster._program(
            "initdb",
            "-D",
            cluster.data_dir,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            timeout=120,
        )
        options = " ".join(
            ["-k", base, "-p", str(PORT)]
            + ["-c %s=%s" % item for item in THROWAWAY_SETTINGS.items()]
        )
        started = True  # from here on, stop it whatever happens
        cluster._program(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-D",
            cluster.data_dir,
            "-l",
            cluster.log_file,
            "-o",
            options,
            timeout=START_TIMEOUT + 10,
        )
        yield cluster
    finally:
        if started:
            subprocess.run(
                [
                    *run_as,
                    os.path.join(bin_dir, "pg_ctl"),
                    "stop",
                    "-w",
                    "-m",
                    "immediate",
                    "-D",
                    cluster.data_dir,
                ],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)
