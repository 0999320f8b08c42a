"""The libvirt connection of one host, and the choice of domain type."""

from __future__ import annotations

import logging
import threading

import libvirt

from compute_driver import exception
from compute_driver.virt.libvirt import kvm_probe

LOG = logging.getLogger(__name__)


def choose_virt_type(uri: str, configured: str, probe_timeout: float) -> str:
    """The domain type for guests: 'test', 'kvm' or 'qemu'.

    :raises HypervisorUnavailable: ``kvm`` was required but is not usable.
    """
    if uri.startswith("test:"):
        return "test"
    if configured == "qemu":
        LOG.info("Using virt_type qemu (software emulation), as configured")
        return "qemu"
    usable, why = kvm_probe.kvm_usable(probe_timeout)
    if configured == "kvm":
        if not usable:
            raise exception.HypervisorUnavailable(uri=uri, reason="virt_type=kvm but %s" % why)
        LOG.info("Using virt_type kvm, as configured: %s", why)
        return "kvm"
    chosen = "kvm" if usable else "qemu"
    LOG.info("virt_type auto: using %s because %s", chosen, why)
    return chosen


class LibvirtHost:
    """Owns the libvirt connection; reopens it when libvirtd went away."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    def get_connection(self) -> libvirt.virConnect:
        """An open connection, reconnecting if the old one died.

        :raises HypervisorUnavailable: libvirtd cannot be reached.
        """
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                LOG.warning("Connection to %s lost; reconnecting", self.uri)
                self._conn = None
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise exception.HypervisorUnavailable(
                    uri=self.uri, reason=exc.get_error_message()
                ) from exc
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
