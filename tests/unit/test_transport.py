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
