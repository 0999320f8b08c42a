"""The committed sample config is what oslo-config-generator makes from the code, on any machine."""

from __future__ import annotations

import subprocess
import sys

GENERATOR_CONF = "etc/compute-driver/config-generator.conf"
SAMPLE = "etc/compute-driver/compute-driver.conf.sample"
HINT = (
    "%s is out of date: run `tox -e genconfig` (or `make genconfig`) and commit the result" % SAMPLE
)

# NOTE: runs the generator as `python -c` so that the host name it sees can
# be changed: a default taken from the machine must not leak into the sample.
GENERATE_ELSEWHERE = """\
import socket, sys
socket.gethostname = lambda: "elsewhere-7f3a.example.org"
socket.getfqdn = lambda name="": "elsewhere-7f3a.example.org"
from oslo_config import generator
sys.exit(generator.main())
"""


def _generate(args: list[str], output, cwd) -> bytes:
    result = subprocess.run(
        args + ["--config-file", GENERATOR_CONF, "--output-file", str(output)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return output.read_bytes()


def test_sample_config_is_up_to_date(tmp_path, repo_dir, bin_dir):
    generated = _generate(
        [str(bin_dir / "oslo-config-generator")], tmp_path / "sample.conf", repo_dir
    )
    committed = (repo_dir / SAMPLE).read_bytes()
    assert generated == committed, HINT


def test_sample_config_does_not_depend_on_the_host_name(tmp_path, repo_dir):
    generated = _generate(
        [sys.executable, "-c", GENERATE_ELSEWHERE], tmp_path / "sample.conf", repo_dir
    )
    assert b"elsewhere-7f3a" not in generated
    assert generated == (repo_dir / SAMPLE).read_bytes(), HINT


def test_sample_config_names_no_path_of_this_checkout(repo_dir):
    text = (repo_dir / SAMPLE).read_text()
    assert str(repo_dir) not in text
    assert "#host = <hostname>" in text


def test_the_sample_and_the_rpc_document_name_the_exchange_the_services_use(repo_dir):
    # Issue 16: the sample said oslo's "openstack" while the services use ours.
    from compute_driver.rpc import transport

    sample = (repo_dir / SAMPLE).read_text()
    assert "#control_exchange = %s\n" % transport.CONTROL_EXCHANGE in sample
    rpc_doc = (repo_dir / "docs" / "rpc-api.md").read_text()
    assert "exchange `%s`" % transport.CONTROL_EXCHANGE in rpc_doc
