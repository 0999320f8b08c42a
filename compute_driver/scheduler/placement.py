"""Choosing a host: filters drop hosts and say why, weighers order the rest.

Both are stevedore plugins, named in ``[scheduler] enabled_filters`` and
``[scheduler] weighers`` and run in that order. The claim in the store has
the last word: a host can fill up between the choice and the claim, so the
caller tries the candidates best first until one claim succeeds.

When no host is left, :meth:`Selection.explain` says, for each filter, how
many hosts it removed and why for the first few; operators read this in the
``NoValidHost`` error and the server's fault, so it stays one line.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from oslo_config import cfg
from stevedore import extension

from compute_driver import config, exception

# NOTE: the host and request views live in host_state so that the filter and
# weigher base classes can import them without importing this module (which
# loads them): re-exported here for the build path and the tests.
from compute_driver.scheduler.host_state import NETWORK_PLUGINS_SPEC as NETWORK_PLUGINS_SPEC
from compute_driver.scheduler.host_state import STORAGE_BACKENDS_SPEC as STORAGE_BACKENDS_SPEC
from compute_driver.scheduler.host_state import HostState as HostState
from compute_driver.scheduler.host_state import Limits as Limits
from compute_driver.scheduler.host_state import RequestSpec as RequestSpec
from compute_driver.scheduler.host_state import split_names as split_names

if TYPE_CHECKING:
    from compute_driver.scheduler.filters.base import BaseHostFilter
    from compute_driver.scheduler.weighers.base import BaseHostWeigher

LOG = logging.getLogger(__name__)

FILTER_NAMESPACE = "compute_driver.scheduler.filters"
WEIGHER_NAMESPACE = "compute_driver.scheduler.weighers"

#: Hosts named with their reason, per filter, in the "no valid host" message.
REASONS_PER_FILTER = 3

#: Name of the pseudo-filter that records claims lost to a concurrent build.
CLAIM_STEP = "claim"


@dataclasses.dataclass
class FilterReport:
    """What one filter did to one request."""

    name: str
    removed: int = 0
    #: "host: why" of the first REASONS_PER_FILTER hosts it removed.
    reasons: list[str] = dataclasses.field(default_factory=list)

    def remove(self, host: str, why: str) -> None:
        self.removed += 1
        if len(self.reasons) < REASONS_PER_FILTER:
            self.reasons.append("%s: %s" % (host, why))

    def explain(self) -> str:
        text = "[%s] removed %d: %s" % (self.name, self.removed, "; ".join(self.reasons))
        if self.removed > len(self.reasons):
            text += "; and %d more" % (self.removed - len(self.reasons))
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"filter": self.name, "removed": self.removed, "reasons": list(self.reasons)}


@dataclasses.dataclass
class Selection:
    """The outcome of placement: candidates best first, and what removed the others."""

    considered: int
    candidates: list[HostState]
    weights: dict[str, float]
    filters: list[FilterReport]

    def claim_failed(self, host: str, why: str = "filled up by a concurrent claim") -> None:
        """Record that the claim on candidate ``host`` lost to a concurrent one."""
        if not self.filters or self.filters[-1].name != CLAIM_STEP:
            self.filters.append(FilterReport(CLAIM_STEP))
        self.filters[-1].remove(host, why)

    def explain(self) -> str:
        """Why no candidate is left, on one line (for NoValidHost and the fault)."""
        if not self.considered:
            return "no compute hosts have reported"
        steps = [f.explain() for f in self.filters if f.removed]
        return "%d host(s) considered; %s" % (self.considered, ". ".join(steps))

    def report(self) -> list[dict[str, Any]]:
        """Every step that ran, removed hosts or not (plain data: it crosses RPC)."""
        return [f.as_dict() for f in self.filters]


def load_plugins(
    manager: extension.ExtensionManager,
    names: Sequence[str],
    conf: cfg.ConfigOpts,
    option: str,
    base: type,
) -> list[Any]:
    """Instances of the plugins ``names`` of ``manager``, in that order.

    :param manager: the namespace's extensions, not yet instantiated (tests
        pass ``ExtensionManager.make_test_instance``).
    :param option: the ``[scheduler]`` option that named them (for errors).
    :raises InvalidConfig: a name is unknown or repeated, or a plugin is not a ``base``.
    """
    available = {ext.name: ext for ext in manager}
    plugins: list[Any] = []
    for name in names:
        if names.count(name) > 1:
            raise exception.InvalidConfig(
                reason="%s[scheduler] %s names %r twice" % (_where(conf, option), option, name)
            )
        ext = available.get(name)
        if ext is None:
            raise exception.InvalidConfig(
                reason="%s[scheduler] %s: no plugin named %r in %s; available: %s"
                % (
                    _where(conf, option),
                    option,
                    name,
                    manager.namespace,
                    ", ".join(sorted(available)) or "none",
                )
            )
        plugin = ext.plugin(conf)
        if not isinstance(plugin, base):
            raise exception.InvalidConfig(
                reason="[scheduler] %s: plugin %r is not a %s" % (option, name, base.__name__)
            )
        plugins.append(plugin)
    return plugins


def _where(conf: cfg.ConfigOpts, option: str) -> str:
    """The file that set ``[scheduler] option``, as a message prefix, if known."""
    try:
        return "%s: " % config.option_location(conf, "scheduler", option)
    except cfg.Error:
        return ""  # a ConfigOpts never loaded from files (tests, embedding)


def _extensions(namespace: str) -> extension.ExtensionManager:
    return extension.ExtensionManager(namespace, invoke_on_load=False)


class Placement:
    """The configured filters and weighers (the scheduler builds one and keeps it)."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        filters: extension.ExtensionManager | None = None,
        weighers: extension.ExtensionManager | None = None,
    ) -> None:
        """
        :param filters: extensions to pick ``[scheduler] enabled_filters`` from;
            default: the installed ``compute_driver.scheduler.filters``.
        :param weighers: likewise for ``[scheduler] weighers``.
        :raises InvalidConfig: an unknown plugin name (see :func:`load_plugins`).
        """
        # NOTE: imported here: the plugin bases import this module's types.
        from compute_driver.scheduler.filters.base import BaseHostFilter
        from compute_driver.scheduler.weighers.base import BaseHostWeigher

        opts = conf.scheduler
        self.filters: list[BaseHostFilter] = load_plugins(
            filters or _extensions(FILTER_NAMESPACE),
            opts.enabled_filters,
            conf,
            "enabled_filters",
            BaseHostFilter,
        )
        self.weighers: list[BaseHostWeigher] = load_plugins(
            weighers or _extensions(WEIGHER_NAMESPACE),
            opts.weighers,
            conf,
            "weighers",
            BaseHostWeigher,
        )

    def select(
        self,
        hosts: Iterable[Mapping[str, Any] | HostState],
        request: RequestSpec,
        list_instances: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
    ) -> Selection:
        """Filter ``hosts`` for ``request``, then order what is left, best first.

        :param hosts: host records (``store.host_dict`` shape) or HostStates.
        :param list_instances: every live server record; called once, and only
            when a filter needs per-host server counts the records lack.
        """
        # NOTE: HostStates pass as they are (the scheduler's host view keeps
        # them built); records are turned into them here.
        states = [h if isinstance(h, HostState) else HostState.from_record(h) for h in hosts]
        total = len(states)
        needs_counts = any(f.needs_instance_counts for f in self.filters)
        if needs_counts and list_instances is not None:
            if any(s.num_instances is None for s in states):
                counts = Counter(i["host"] for i in list_instances() if i.get("host"))
                states = [
                    s
                    if s.num_instances is not None
                    else dataclasses.replace(s, num_instances=counts.get(s.name, 0))
                    for s in states
                ]
        reports = []
        for host_filter in self.filters:
            if not states:
                break
            report = FilterReport(host_filter.name)
            kept = []
            for state in states:
                try:
                    why = host_filter.why_not(state, request)
                except Exception:
                    LOG.exception(
                        "Filter %s failed on host %s for %s",
                        host_filter.name,
                        state.name,
                        request.instance,
                    )
                    raise
                if why is None:
                    kept.append(state)
                else:
                    report.remove(state.name, why)
            reports.append(report)
            states = kept
        weights = self._weigh(states, request)
        states.sort(key=lambda h: (-weights[h.name], h.name))
        return Selection(total, states, weights, reports)

    def _weigh(self, hosts: list[HostState], request: RequestSpec) -> dict[str, float]:
        """Each weigher's values scaled to 0..1 across ``hosts``, times its multiplier, summed."""
        totals = {h.name: 0.0 for h in hosts}
        for weigher in self.weighers:
            if not hosts or not weigher.multiplier:
                continue
            raw = [weigher.weigh(h, request) for h in hosts]
            low, span = min(raw), max(raw) - min(raw)
            for host, value in zip(hosts, raw, strict=True):
                # NOTE: equal values weigh 0: a weigher that cannot tell the
                # hosts apart must not shift the others' order.
                totals[host.name] += weigher.multiplier * ((value - low) / span if span else 0.0)
        return totals
