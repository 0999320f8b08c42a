"""Image properties against what the host's agent reports.

.. list-table::
   :header-rows: 1

   * - image property
     - host capability
     - passes when
   * - ``architecture`` (Glance's common property; e.g. ``x86_64``)
     - ``arch``
     - the host runs guests of that architecture (an x86_64 host runs i686)
   * - ``img_hv_type`` (``kvm`` or ``qemu``)
     - ``virt_type``
     - they are equal
   * - ``hw_cpu_mode=host-passthrough``
     - ``virt_type``
     - it is ``kvm`` (guest_config refuses the build otherwise)
   * - ``img_cpu_features`` (e.g. ``avx2,aes``)
     - ``cpu_features``
     - the host has every feature listed

A host that does not report a capability an image asks about is dropped:
an unchecked requirement is not a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compute_driver.scheduler.filters.base import BaseHostFilter
from compute_driver.scheduler.host_state import HostState, RequestSpec, split_names

ARCH_PROPERTY = "architecture"
VIRT_TYPE_PROPERTY = "img_hv_type"
CPU_FEATURES_PROPERTY = "img_cpu_features"
CPU_MODE_PROPERTY = "hw_cpu_mode"

#: Other spellings of an architecture, as images and kernels name them.
ARCH_ALIASES = {
    "amd64": "x86_64",
    "x64": "x86_64",
    "x86-64": "x86_64",
    "arm64": "aarch64",
    "i386": "i686",
    "i486": "i686",
    "i586": "i686",
    "x86": "i686",
    "ppc64el": "ppc64le",
}
#: Guest architectures a host of an architecture runs besides its own.
ALSO_RUNS = {"x86_64": frozenset({"i686"})}


def canonical_arch(name: str) -> str:
    name = name.strip().lower()
    return ARCH_ALIASES.get(name, name)


class ImagePropertiesFilter(BaseHostFilter):
    name = "image_properties"

    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        props = request.image_properties
        caps = host.capabilities
        for check in (_arch, _virt_type, _cpu_mode, _cpu_features):
            why = check(props, caps)
            if why is not None:
                return why
        return None


def _arch(props: Mapping[str, str], caps: Mapping[str, Any]) -> str | None:
    wanted = props.get(ARCH_PROPERTY)
    if not wanted:
        return None
    if not caps.get("arch"):
        return "image needs arch %s; the host does not report its arch" % wanted
    host_arch = canonical_arch(caps["arch"])
    if canonical_arch(wanted) in {host_arch} | ALSO_RUNS.get(host_arch, frozenset()):
        return None
    return "image needs arch %s, host is %s" % (wanted, caps["arch"])


def _virt_type(props: Mapping[str, str], caps: Mapping[str, Any]) -> str | None:
    wanted = props.get(VIRT_TYPE_PROPERTY)
    if not wanted or wanted == caps.get("virt_type"):
        return None
    return "image needs virt_type %s, host has %s" % (wanted, caps.get("virt_type") or "none")


def _cpu_mode(props: Mapping[str, str], caps: Mapping[str, Any]) -> str | None:
    # NOTE: the same rule as guest_config._cpu_mode, which would fail the
    # build on the host; refusing here lets another host take it.
    if props.get(CPU_MODE_PROPERTY) != "host-passthrough" or caps.get("virt_type") == "kvm":
        return None
    return "image needs %s=host-passthrough, which needs virt_type kvm; host has %s" % (
        CPU_MODE_PROPERTY,
        caps.get("virt_type") or "none",
    )


def _cpu_features(props: Mapping[str, str], caps: Mapping[str, Any]) -> str | None:
    wanted = {f.lower() for f in split_names(props.get(CPU_FEATURES_PROPERTY))}
    if not wanted:
        return None
    if "cpu_features" not in caps:
        return "image needs CPU features %s; the host does not report its CPU features" % (
            ",".join(sorted(wanted))
        )
    missing = wanted - {str(f).lower() for f in caps["cpu_features"]}
    if missing:
        return "image needs CPU features the host lacks: %s" % ",".join(sorted(missing))
    return None
