"""Options of the signed agent reports: ``[agent_reports]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "agent_reports",
    title="Agent reports",
    help="Agents sign what they report (host state, instance state changes) so that "
    "one host cannot report for another, and the scheduler signs what it asks of each "
    "agent so that no other agent can. See compute_driver/rpc/report_signing.py.",
)

OPTS = [
    cfg.StrOpt(
        "secret",
        secret=True,
        help="On the scheduler: the secret every host's key is derived from. "
        "Set, the scheduler refuses every report that is not signed with the key of "
        "the host it names, and signs its requests to each agent with that agent's "
        "key; unset, it accepts unsigned reports (and warns at start) and sends "
        "unsigned requests. Keep it on the scheduler hosts only. Related options: key.",
    ),
    cfg.StrOpt(
        "key",
        secret=True,
        regex=r"^[0-9a-f]{64}$",
        help="On an agent: this host's report key (64 hex digits), printed by "
        "`python -m compute_driver.rpc.report_signing HOST < secret-file`. Unset, an "
        "agent whose configuration has [agent_reports] secret (one process or one "
        "file for both services) derives it. With a key, the agent signs its reports "
        "and refuses every request the scheduler did not sign with it; without one, "
        "reports go unsigned and requests are not checked. Set it on every agent once "
        "the scheduler has the secret. Related options: secret, [DEFAULT] host.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
