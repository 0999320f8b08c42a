"""Small devices: ``<memballoon>``, ``<rng>`` and ``<watchdog>``."""

from __future__ import annotations

from .base import XMLBuilder, xml_property


class MemBalloon(XMLBuilder):
    """``<memballoon>``; ``stats_period`` (seconds) turns on balloon stats."""

    XML_NAME = "memballoon"

    model: str | None = xml_property("./@model", required=True, choices=("virtio", "none"))
    stats_period: int | None = xml_property("./stats/@period", int, minimum=0)

    def _validate(self) -> None:
        if self.model == "none" and self.stats_period is not None:
            raise self.error("stats_period needs a balloon model other than 'none'")


class Rng(XMLBuilder):
    """``<rng>``: a virtio RNG fed from ``backend_path`` on the host."""

    XML_NAME = "rng"

    model: str | None = xml_property("./@model", required=True, choices=("virtio",))
    backend_model: str | None = xml_property(
        "./backend/@model", required=True, choices=("random", "builtin")
    )
    backend_path: str | None = xml_property("./backend")

    def _validate(self) -> None:
        if self.backend_model == "builtin" and self.backend_path is not None:
            raise self.error("backend_path needs backend_model 'random'")


class Watchdog(XMLBuilder):
    """``<watchdog>``: what the host does when the guest stops petting it."""

    XML_NAME = "watchdog"

    model: str | None = xml_property(
        "./@model", required=True, choices=("i6300esb", "ib700", "diag288", "itco")
    )
    action: str | None = xml_property(
        "./@action",
        choices=("reset", "shutdown", "poweroff", "pause", "none", "dump", "inject-nmi"),
    )
