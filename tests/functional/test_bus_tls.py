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
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import oslo_messaging as messaging
import pytest
from oslo_config import cfg

from compute_driver import config, exception
from compute_driver.rpc import transport

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
#: Seconds a private node may take to boot on a loaded 2-core machine.
BOOT_TIMEOUT = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    workdir: str
    ca_file: str
    other_ca_file: str
    tls_port: int
    proc: subprocess.Popen

    def url(self, query: str = "?ssl=1") -> str:
        return "rabbit://guest:guest@127.0.0.1:%d/%s" % (self.tls_port, query)


def _wait_for_tls(port: int, ca_file: str, proc: subprocess.Popen, log: str) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return
        except OSError:
            time.sleep(0.5)
    with open(log, errors="replace") as f:
        tail = f.read()[-3000:]
    pytest.fail("the private RabbitMQ node did not open its TLS port:\n" + tail)


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    if os.geteuid() != 0 or not os.path.exists(RABBITMQ_SERVER) or not shutil.which("openssl"):
        pytest.skip("needs root, rabbitmq-server and openssl")
    workdir = tempfile.mkdtemp(prefix="cd-rabbit-tls-")
    os.chmod(workdir, 0o700)
    ca = make_ca(workdir, "test-ca")
    other_ca = make_ca(workdir, "other-ca")
    cert, key = make_server_cert(workdir, ca)
    tls_port, tcp_port, dist_port = _free_port(), _free_port(), _free_port()
    conf_file = os.path.join(workdir, "rabbitmq.conf")
    with open(conf_file, "w") as f:
        f.write(
            "listeners.tcp.1 = 127.0.0.1:%d\n"
            "listeners.ssl.1 = 127.0.0.1:%d\n"
            "ssl_options.cacertfile = %s\n"
            "ssl_options.certfile = %s\n"
            "ssl_options.keyfile = %s\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n" % (tcp_port, tls_port, ca[0], cert, key)
        )
    plugins = os.path.join(workdir, "enabled_plugins")
    with open(plugins, "w") as f:
        f.write("[].\n")
    node = "cdtls%s@localhost" % uuid.uuid4().hex[:8]
    env = dict(
        os.environ,
        RABBITMQ_NODENAME=node,
        RABBITMQ_USE_LONGNAME="false",
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(tcp_port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_CONFIG_FILE=conf_file,
        RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
        RABBITMQ_MNESIA_BASE=os.path.join(workdir, "mnesia"),
        RABBITMQ_LOG_BASE=os.path.join(workdir, "log"),
        RABBITMQ_PID_FILE=os.path.join(workdir, "node.pid"),
        RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(workdir, "advanced.config"),
        RABBITMQ_LOGS="-",
    )
    log = os.path.join(workdir, "node.out")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [RABBITMQ_SERVER],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_for_tls(tls_port, ca[0], proc, log)
        yield PrivateBroker(workdir, ca[0], other_ca[0], tls_port, proc)
    finally:
        # NOTE: only this node: its own process group, started above.
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


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
