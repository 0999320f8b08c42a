"""Options of our RPC layer: ``[rpc]`` (transport options are oslo.messaging's)."""

from oslo_config import cfg

GROUP = cfg.OptGroup("rpc", title="RPC", help="compute-driver's use of the message bus.")

OPTS = [
    cfg.IntOpt(
        "connection_retries",
        default=2,
        min=0,
        max=100,
        help="How many times a call or cast retries connecting to the "
        "broker before it fails with a messaging_error (oslo.messaging "
        "alone would retry forever, and a command would hang while the "
        "broker is down).",
    ),
    cfg.IntOpt(
        "long_call_timeout",
        default=1800,
        min=1,
        max=86400,
        help="Seconds a call that copies data waits for its answer (making "
        "an image of a server). Related options: call_timeout.",
    ),
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
