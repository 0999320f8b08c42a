"""One transport per configuration and broker URL: a credential is never reused."""

from __future__ import annotations

from oslo_config import cfg

from compute_driver import conf as cd_conf
from compute_driver.rpc import transport


def test_a_conf_loaded_again_with_another_url_gets_another_transport() -> None:
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    conf([], default_config_files=[])
    try:
        transport.get_transport(conf)  # oslo.messaging registers transport_url
        conf.set_override("transport_url", "kombu+memory:///client")
        first = transport.get_transport(conf)
        assert transport.get_transport(conf) is first
        # NOTE: what a process that loads the global cfg.CONF twice does
        # (the functional tests, an embedded tool): the second URL is
        # another service's credential, never the first one's transport.
        conf.set_override("transport_url", "kombu+memory:///scheduler")
        assert transport.get_transport(conf) is not first
    finally:
        transport.cleanup()


def test_a_cast_while_the_broker_is_down_is_a_typed_error() -> None:
    """Issue 13 item 12: a raw ``kombu.exceptions.OperationalError`` came out of
    every agent report while the broker was down."""
    import socket

    from compute_driver import exception
    from compute_driver.rpc.agent_reports_api import AgentReportsAPI
    from tests.unit.test_fuzz_rpc import _register_messaging_opts

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    _register_messaging_opts(conf)
    conf([], default_config_files=[])
    try:
        transport.get_transport(conf)  # oslo.messaging registers transport_url
        conf.set_override("transport_url", "rabbit://guest:guest@127.0.0.1:%d/" % port)
        conf.set_override("connection_retries", 0, "rpc")
        api = AgentReportsAPI(conf)
        try:
            api.report_host("h0", {"vcpus": 1, "memory_mb": 512, "disk_gb": 1}, {}, [])
        except exception.MessagingError as exc:
            assert "agent_reports" in exc.message and "refused" in exc.message
        else:
            raise AssertionError("a cast to a broker that is down was sent")
    finally:
        transport.cleanup()
