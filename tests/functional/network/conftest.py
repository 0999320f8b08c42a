"""Fixtures of the functional network tests: a :class:`Lab` of namespaces, two hosts.

Needs root; not the compute-driver services (except ``two_host_cloud``, which
runs our services and libvirtd on them). See netns_lab.py for the layout.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from netns_lab import Host, Lab
from ovs_lab import OvsLab, missing_prerequisites
from two_host_cloud import TwoHostCloud


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("functional network tests run as root (network namespaces); use `make test`")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.cleanup()


@pytest.fixture
def hosts(lab: Lab) -> tuple[Host, Host]:
    """Hosts A and B joined by the underlay (ul0) and physnet1 (ph0) veths."""
    return lab.build_hosts()


@pytest.fixture
def ovs_lab() -> Iterator[OvsLab]:
    """Two hosts, each with its own OVS daemons (see ovs_lab.py); call ``build_hosts()``."""
    if os.geteuid() != 0:
        pytest.fail("functional network tests run as root (network namespaces); use `make test`")
    if why := missing_prerequisites():
        pytest.fail(why)
    lab = OvsLab()
    try:
        yield lab
    finally:
        lab.cleanup()


@pytest.fixture
def two_host_cloud(lab: Lab) -> Iterator[TwoHostCloud]:
    """Our scheduler and two agents, each on its own simulated host (namespace + libvirtd).

    See two_host_cloud.py. Torn down whatever happened, before the lab's namespaces.
    """
    cloud = TwoHostCloud(lab)
    try:
        cloud.start()
        yield cloud
    finally:
        cloud.cleanup()
