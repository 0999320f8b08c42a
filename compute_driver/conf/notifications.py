"""Options of the versioned notifications: ``[notifications]``."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "notifications",
    title="Notifications",
    help="Versioned notifications the scheduler sends about servers, for other "
    "services and for monitoring.",
)

OPTS = [
    cfg.BoolOpt(
        "enabled",
        default=True,
        help="Send notifications (instance.create.start/end, instance.delete.start/end, "
        "instance.power_on/power_off/pause/suspend..., instance.error) on the bus.",
    ),
    cfg.ListOpt(
        "topics",
        default=["versioned_notifications"],
        help="Topics the notifications go to (a consumer listens on '<topic>.info' "
        "and '<topic>.error' of the control exchange). Related options: enabled.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
