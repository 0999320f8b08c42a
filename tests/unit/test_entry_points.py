"""Every entry point we ship loads, and each plugin implements its family's interface."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest
from oslo_config import cfg

from compute_driver.virt.base import ComputeDriver
from network_plugins.base import NetworkPlugin
from storage_backends.base import StorageBackend

DISTRIBUTION = "compute-driver"

FAMILIES = {
    "compute_driver.virt": ComputeDriver,
    "compute_driver.network": NetworkPlugin,
    "compute_driver.storage": StorageBackend,
}

ENTRY_POINTS = sorted(
    importlib.metadata.distribution(DISTRIBUTION).entry_points, key=lambda ep: (ep.group, ep.name)
)


def _ids(ep: importlib.metadata.EntryPoint) -> str:
    return "%s:%s" % (ep.group, ep.name)


def test_distribution_declares_every_family_and_the_scripts():
    groups = {ep.group for ep in ENTRY_POINTS}
    assert set(FAMILIES) <= groups
    assert "oslo.config.opts" in groups
    scripts = {ep.name for ep in ENTRY_POINTS if ep.group == "console_scripts"}
    assert scripts == {"compute-agent", "compute-scheduler", "computectl"}


@pytest.mark.parametrize("ep", ENTRY_POINTS, ids=_ids)
def test_entry_point_loads(ep):
    loaded = ep.load()
    assert callable(loaded)


@pytest.mark.parametrize("ep", [ep for ep in ENTRY_POINTS if ep.group in FAMILIES], ids=_ids)
def test_plugin_implements_its_family(ep):
    plugin = ep.load()
    base = FAMILIES[ep.group]
    assert isinstance(plugin, type) and issubclass(plugin, base), (plugin, base)
    assert not getattr(plugin, "__abstractmethods__", None), plugin.__abstractmethods__


@pytest.mark.parametrize(
    "ep",
    [ep for ep in ENTRY_POINTS if ep.group in ("compute_driver.network", "compute_driver.storage")],
    ids=_ids,
)
def test_plugin_name_is_its_entry_point_name(ep):
    # NOTE: the name is also the option group a plugin reads ([dir], ...).
    assert ep.load().name == ep.name


@pytest.mark.parametrize(
    "ep", [ep for ep in ENTRY_POINTS if ep.group == "oslo.config.opts"], ids=_ids
)
def test_oslo_config_opts_are_group_and_documented_options(ep):
    pairs = ep.load()()
    assert pairs
    seen = set()
    for group, opts in pairs:
        assert isinstance(group, (str, cfg.OptGroup)), group
        name = group if isinstance(group, str) else group.name
        assert name not in seen, "group %s listed twice" % name
        seen.add(name)
        assert opts, "group %s has no options" % name
        for opt in opts:
            assert isinstance(opt, cfg.Opt)
            assert opt.help and opt.help.strip(), "[%s] %s has no help" % (name, opt.name)
    if ep.name != "compute_driver":
        return
    assert {
        "DEFAULT",
        "agent",
        "scheduler",
        "database",
        "libvirt",
        "image",
        "storage",
        "upgrade_levels",
        "rpc",
    } <= seen


def test_every_plugin_group_is_in_the_generator_namespaces():
    # NOTE: the core lists no plugin; each family's oslo.config.opts entry
    # point gathers the groups of the plugins installed in that family.
    namespaces = {ep.name: ep for ep in ENTRY_POINTS if ep.group == "oslo.config.opts"}
    core = {g if isinstance(g, str) else g.name for g, _ in namespaces["compute_driver"].load()()}
    network = {g.name for g, _ in namespaces["compute_driver.network"].load()()}
    storage = {g.name for g, _ in namespaces["compute_driver.storage"].load()()}
    # NOTE: at least the shipped ones; a new plugin needs no edit here.
    assert network >= {"linux_bridge", "ovs"}
    assert storage >= {"dir", "iscsi", "nfs", "rbd"}
    for ep in ENTRY_POINTS:
        if ep.group in ("compute_driver.network", "compute_driver.storage"):
            module = importlib.import_module(ep.load().__module__)
            groups = {getattr(g, "name", g) for g in module.list_opts()}
            assert groups <= (network | storage), ep.name
    assert not (core & (network | storage))
