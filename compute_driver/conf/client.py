"""Options of a client of the public scheduler API: ``[client]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "client",
    title="Client",
    help="A client of the public scheduler API (computectl, an upstream API) signs "
    "every call so that no other holder of a broker credential (an agent) can call "
    "it. See compute_driver/rpc/report_signing.py.",
)

OPTS = [
    cfg.StrOpt(
        "key",
        secret=True,
        regex=r"^[0-9a-f]{64}$",
        help="The client key (64 hex digits), printed by `python -m "
        "compute_driver.rpc.report_signing --client < secret-file` from the "
        "scheduler's [agent_reports] secret. With it, every call to the scheduler "
        "is signed, context included; a scheduler with a secret refuses every call "
        "that is not. Unset, a client whose configuration has [agent_reports] "
        "secret derives it; otherwise calls go unsigned. Never give it to an agent. "
        "Related options: [agent_reports] secret.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
