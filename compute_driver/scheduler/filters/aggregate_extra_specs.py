"""Match flavor extra specs ``aggregate_instance_extra_specs:KEY=VALUE``
against the properties of the host's aggregates (``aggregate set --property``)."""

from __future__ import annotations

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, RequestSpec

#: The extra-spec prefix this filter reads.
PREFIX = "aggregate_instance_extra_specs:"


class AggregateInstanceExtraSpecsFilter(BaseHostFilter):
    name = "aggregate_instance_extra_specs"

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        for key, wanted in request.extra_specs.items():
            if not key.startswith(PREFIX):
                continue
            prop = key[len(PREFIX) :]
            has = host.aggregate_properties.get(prop, frozenset())
            if wanted not in has:
                return "its aggregates give %s=%s, not %s" % (
                    prop,
                    ",".join(sorted(has)) or "(nothing)",
                    wanted,
                )
        return None
