"""Persistent tap devices, made by the plugin that owns them (``/dev/net/tun`` ioctls).

The kernel makes tun/tap devices only through ``/dev/net/tun`` (rtnetlink
refuses), and a device made that way lives in the network namespace of
whoever opened ``/dev/net/tun``. Given a namespace name, the ioctls run in a
short-lived thread that first joins that namespace (``setns`` moves the
calling thread only, and the thread ends right after), so the rest of the
process stays where it is: tests use this to simulate several hosts on one
machine.

A persistent tap outlives the processes that attach to it: QEMU (through
libvirt's ``<target dev=... managed='no'/>``) attaches when the guest starts
and detaches when it stops, and the device, with whatever switch port it
is, stays as its owner made it. Delete it with rtnetlink
(:meth:`network_plugins.netlink.Netlink.delete`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from compute_driver import exception

TAP_PREFIX = "tap"
TAP_ID_CHARS = 11  # tap + 11 = 14 characters, as Nova names them
TUN_DEVICE = "/dev/net/tun"
NETNS_DIR = "/run/netns"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


def tap_name(port_id: str) -> str:
    """``tap`` + the first 11 characters of the port id: the name of a port's tap.

    :raises Invalid: the id cannot name a device.
    """
    if not port_id or any(c in "/:" or c.isspace() for c in port_id[:TAP_ID_CHARS]):
        raise exception.Invalid(reason=f"port id {port_id!r} cannot name a tap device")
    return TAP_PREFIX + port_id[:TAP_ID_CHARS]


class TapError(OSError):
    """A tap device could not be made."""


def _ifreq(name: str, flags: int) -> bytes:
    # struct ifreq: the name (16 bytes with its NUL), the flags, padding to 40 bytes
    return struct.pack("16sH22x", name.encode(), flags)


def _make(name: str) -> None:
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        # NOTE: not IFF_MULTI_QUEUE: libvirt attaches with one queue (no
        # <driver queues>), and the kernel refuses a mismatch. IFF_VNET_HDR
        # is QEMU's to set when it attaches.
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, IFF_TAP | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


def in_netns(netns: str | None, func: Callable[[], T]) -> T:
    """``func()`` with the network namespace ``netns`` (None: this thread, as it is).

    :raises TapError: the namespace cannot be joined.
    """
    if not netns:
        return func()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise TapError(
                        code, f"cannot join network namespace {netns}: {os.strerror(code)}"
                    )
            finally:
                os.close(fd)
            outcome["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    # NOTE: a thread of its own, which ends after the call: the namespace it
    # joined never leaks into a thread that does other work.
    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def create_persistent(name: str, netns: str | None = None) -> None:
    """Make tap ``name`` (persistent, no packet info header) in ``netns``.

    :raises TapError: the device cannot be made (``errno.EBUSY``: a device of
        that name exists and something is attached to it; ``EINVAL``: it
        exists and is not a tap).
    """
    try:
        in_netns(netns, lambda: _make(name))
    except TapError:
        raise
    except OSError as exc:
        code = exc.errno or errno.EIO
        raise TapError(code, f"cannot make tap {name}: {os.strerror(code)}") from exc
