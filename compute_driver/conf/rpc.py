"""Options of our RPC layer: ``[rpc]`` (transport options are oslo.messaging's)."""

from oslo_config import cfg

GROUP = cfg.OptGroup("rpc", title="RPC", help="compute-driver's use of the message bus.")

OPTS = [
    cfg.IntOpt(
        "call_timeout",
        default=60,
        min=1,
        max=3600,
        help="Seconds an RPC call waits for its answer before failing with "
        "a messaging_timeout error.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> dict:
    return {GROUP: OPTS}
