"""TLS to the broker, against a private RabbitMQ node with a test CA.

The shared broker on 5672 is never touched: this module starts its own
node (its own name, ports, config, Mnesia and log directories under a
temporary directory) with a TLS listener whose certificate a CA made here
signed, and shows that a client configured as README.md says
(``rabbit://...:PORT/?ssl=1`` and ``[oslo_messaging_rabbit] ssl_ca_file``)
talks RPC over it, and that a client trusting another CA is refused.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import oslo_messaging as messaging
import pytest
from oslo_config import cfg

from compute_driver import config, exception
from compute_driver.rpc import transport
from tests.functional import private_rabbit


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(workdir: str, name: str) -> tuple[str, str]:
    """A self-signed CA: (certificate path, key path)."""
    key, cert = os.path.join(workdir, name + ".key"), os.path.join(workdir, name + ".pem")
    _openssl("genrsa", "-out", key, "2048", cwd=workdir)
    _openssl(
        "req", "-x509", "-new", "-key", key, "-days", "2", "-subj", "/CN=" + name, "-out", cert,
        cwd=workdir,
    )  # fmt: skip
    return cert, key


def make_server_cert(workdir: str, ca: tuple[str, str]) -> tuple[str, str]:
    """A server certificate for 127.0.0.1 and localhost signed by ``ca``: (cert, key)."""
    key, csr = os.path.join(workdir, "server.key"), os.path.join(workdir, "server.csr")
    cert, ext = os.path.join(workdir, "server.pem"), os.path.join(workdir, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl("genrsa", "-out", key, "2048", cwd=workdir)
    _openssl("req", "-new", "-key", key, "-subj", "/CN=127.0.0.1", "-out", csr, cwd=workdir)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-days", "2", "-extfile", ext, "-out", cert,
        cwd=workdir,
    )  # fmt: skip
    # NOTE: the node runs as root here, but keep the key as a deployment would.
    os.chmod(key, 0o600)
    return cert, key


@dataclass
class PrivateBroker:
    """A RabbitMQ node of this test's own, with a TLS listener."""

    node: private_rabbit.PrivateRabbit
    ca_file: str
    other_ca_file: str
    tls_port: int

    @property
    def workdir(self) -> str:
        return self.node.workdir

    def url(self, query: str = "?ssl=1") -> str:
        return "rabbit://guest:guest@127.0.0.1:%d/%s" % (self.tls_port, query)


def _accepts_tls(port: int, ca_file: str) -> bool:
    context = ssl.create_default_context(cafile=ca_file)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    if private_rabbit.available() is not None or not shutil.which("openssl"):
        pytest.skip("needs root, rabbitmq-server and openssl")
    workdir = tempfile.mkdtemp(prefix="cd-rabbit-tls-")
    os.chmod(workdir, 0o700)
    ca = make_ca(workdir, "test-ca")
    other_ca = make_ca(workdir, "other-ca")
    cert, key = make_server_cert(workdir, ca)
    tls_port = private_rabbit.free_port()
    node = private_rabbit.PrivateRabbit(
        workdir,
        extra_config="listeners.ssl.1 = 127.0.0.1:%d\n"
        "ssl_options.cacertfile = %s\n"
        "ssl_options.certfile = %s\n"
        "ssl_options.keyfile = %s\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n" % (tls_port, ca[0], cert, key),
    )
    try:
        try:
            node.start(ready=lambda: _accepts_tls(tls_port, ca[0]))
        except private_rabbit.BrokerFailed as exc:
            pytest.fail(str(exc))
        yield PrivateBroker(node, ca[0], other_ca[0], tls_port)
    finally:
        node.remove()


def _client_conf(workdir: str, url: str, ca_file: str | None) -> cfg.ConfigOpts:
    path = os.path.join(workdir, "client-%s.conf" % uuid.uuid4().hex[:6])
    with open(path, "w") as f:
        f.write("[DEFAULT]\ntransport_url = %s\n" % url)
        if ca_file:
            f.write("\n[oslo_messaging_rabbit]\nssl_ca_file = %s\n" % ca_file)
    conf = config.load(["--config-file", path], "functional-test", default_config_files=[])
    transport.get_transport(conf)  # registers [oslo_messaging_rabbit]
    return conf


class Echo:
    target = messaging.Target(version="1.0")

    @messaging.expose
    def echo(self, ctxt: dict, text: str) -> str:
        return text


def test_rpc_over_tls_with_the_test_ca(broker: PrivateBroker) -> None:
    conf = _client_conf(broker.workdir, broker.url(), broker.ca_file)
    try:
        transport.check_broker(conf, retries=0)
        topic = "tls-echo-" + uuid.uuid4().hex[:6]
        server = transport.get_server(conf, messaging.Target(topic=topic, server="s"), [Echo()])
        server.start(override_pool_size=2)
        try:
            client = messaging.get_rpc_client(
                transport.get_transport(conf), messaging.Target(topic=topic), timeout=60
            )
            assert client.call({}, "echo", text="over TLS") == "over TLS"
        finally:
            server.stop()
            server.wait()
    finally:
        transport.cleanup()


def test_client_not_trusting_the_ca_is_refused(broker: PrivateBroker) -> None:
    conf = _client_conf(broker.workdir, broker.url(), broker.other_ca_file)
    try:
        with pytest.raises(exception.MessagingError) as info:
            transport.check_broker(conf, retries=0)
        assert "CERTIFICATE_VERIFY_FAILED" in info.value.message
    finally:
        transport.cleanup()


def test_plain_amqp_to_the_tls_port_is_refused(broker: PrivateBroker) -> None:
    conf = _client_conf(broker.workdir, broker.url(query=""), None)
    try:
        with pytest.raises(exception.MessagingError):
            transport.check_broker(conf, retries=0)
    finally:
        transport.cleanup()
