"""Options of the signed agent reports: ``[agent_reports]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "agent_reports",
    title="Agent reports",
    help="Agents sign what they report (host state, instance state changes) so that "
    "one host cannot report for another. See compute_driver/rpc/report_signing.py.",
)

OPTS = [
    cfg.StrOpt(
        "secret",
        secret=True,
        help="On the scheduler: the secret every host's report key is derived from. "
        "Set, the scheduler refuses every report that is not signed with the key of "
        "the host it names; unset, it accepts unsigned reports and warns at start. "
        "Keep it on the scheduler hosts only. Related options: key.",
    ),
    cfg.StrOpt(
        "key",
        secret=True,
        regex=r"^[0-9a-f]{64}$",
        help="On an agent: this host's report key (64 hex digits), printed by "
        "`python -m compute_driver.rpc.report_signing HOST < secret-file`. Unset, an "
        "agent whose configuration has [agent_reports] secret (one process or one "
        "file for both services) derives it; otherwise its reports go unsigned. "
        "Related options: secret, [DEFAULT] host.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
