"""Small devices: ``<controller>``, ``<memballoon>``, ``<rng>`` and ``<watchdog>``."""

from __future__ import annotations

from .base import XMLBuilder, xml_property


class Controller(XMLBuilder):
    """``<controller type index model>``: e.g. the virtio-scsi HBA that ``bus='scsi'`` disks need.

    NOTE: without one, libvirt adds an lsilogic HBA for SCSI disks on ``pc``
    machines, a device many QEMU builds leave out.
    """

    XML_NAME = "controller"

    # NOTE: every type libvirt has, so the controllers it adds parse and write back.
    type: str | None = xml_property(
        "./@type",
        required=True,
        choices=("scsi", "sata", "ide", "fdc", "usb", "pci", "virtio-serial", "ccid", "isa"),
    )
    index: int | None = xml_property("./@index", int, minimum=0)
    model: str | None = xml_property("./@model")


class MemBalloon(XMLBuilder):
    """``<memballoon>``; ``stats_period`` (seconds) turns on balloon stats."""

    XML_NAME = "memballoon"

    model: str | None = xml_property("./@model", required=True, choices=("virtio", "none"))
    stats_period: int | None = xml_property("./stats/@period", int, minimum=0)

    def _validate(self) -> None:
        if self.model == "none" and self.stats_period is not None:
            raise self.error("stats_period needs a balloon model other than 'none'")


class Rng(XMLBuilder):
    """``<rng>``: a virtio RNG fed from ``backend_path`` on the host.

    ``rate_bytes`` per ``rate_period`` milliseconds (libvirt's default period
    is 1000) caps how fast the guest may drain the host's entropy.
    """

    XML_NAME = "rng"

    model: str | None = xml_property("./@model", required=True, choices=("virtio",))
    rate_bytes: int | None = xml_property("./rate/@bytes", int, minimum=1)
    rate_period: int | None = xml_property("./rate/@period", int, minimum=1)
    backend_model: str | None = xml_property(
        "./backend/@model", required=True, choices=("random", "builtin")
    )
    backend_path: str | None = xml_property("./backend")

    def _validate(self) -> None:
        if self.backend_model == "builtin" and self.backend_path is not None:
            raise self.error("backend_path needs backend_model 'random'")
        if self.rate_period is not None and self.rate_bytes is None:
            raise self.error("rate_period needs rate_bytes")


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
