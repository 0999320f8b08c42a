"""Options of the scheduler's SQL store: ``[database]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup("database", title="Database", help="The scheduler's SQL store.")

OPTS = [
    cfg.StrOpt(
        "connection",
        default="sqlite:///$state_path/scheduler.sqlite",
        secret=True,
        help="SQLAlchemy URL of the scheduler's database. SQLite (the "
        "default, embedded) serves one scheduler; several schedulers share "
        "one PostgreSQL database (postgresql+psycopg2://user:pw@host/db). "
        "Related options: [DEFAULT] state_path.",
    ),
    cfg.IntOpt(
        "busy_timeout",
        default=30,
        min=1,
        max=600,
        help="Seconds a SQLite writer waits for the database lock.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
