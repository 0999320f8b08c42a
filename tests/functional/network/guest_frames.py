"""Frames sent as a guest sends them, and frames seen where a guest receives them.

Helpers of test_power_cycles.py. The test guest (busybox, no 8021q module)
cannot send an 802.1Q frame, so :func:`send_from_guest` puts frames on the
guest NIC's way out inside its QEMU: a ``filter-redirector`` on the NIC's
tap backend (queue ``rx``: what the NIC sends to the backend) reads them from
a chardev connected to a socket of ours (QMP through libvirt). To the host,
the tap, the switch and every other guest, they are frames the guest sent.
:class:`TapCapture` reads, with a packet socket in the host's namespace,
what the switch sends to a guest's tap: what that guest receives.

NOTE: virtio-net makes QEMU's tap backend take a virtio-net header before
each frame (12 bytes once a Linux guest's driver has negotiated VERSION_1,
10 before): send only to a guest that has booted, and check with a frame
that must arrive (a positive control) that the frames went out whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import tempfile
import time
from collections.abc import Iterator

import libvirt
import libvirt_qemu
from lxml import etree
from pyroute2 import netns

ETH_P_ALL = 0x0003
BROADCAST = "ff:ff:ff:ff:ff:ff"
VIRTIO_NET_HDR_LEN = 12
_ids = iter(range(1, 1 << 30))


def _mac(text: str) -> bytes:
    return bytes(int(octet, 16) for octet in text.split(":"))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(
    src_mac: str,
    src_ip: str,
    payload: bytes,
    dst_mac: str = BROADCAST,
    dst_ip: str = "255.255.255.255",
    vlan: int | None = None,
    port: int = 9,
    src_port: int | None = None,
) -> bytes:
    """An Ethernet frame with an IPv4 UDP datagram from ``src_port`` (default: ``port``)
    to ``port``; with ``vlan``, an 802.1Q header."""
    sport = port if src_port is None else src_port
    udp = struct.pack("!HHHH", sport, port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        socket.inet_aton(src_ip),
        socket.inet_aton(dst_ip),
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return _ethernet(dst_mac, src_mac, 0x0800, header + udp, vlan)


def arp_reply(
    src_mac: str,
    src_ip: str,
    dst_mac: str,
    dst_ip: str,
    vlan: int | None = None,
    trailer: bytes = b"",
) -> bytes:
    """An ARP reply "``src_ip`` is at ``src_mac``" to ``dst_mac``; ``trailer`` after it
    (where the padding would be: a marker the receivers can be searched for)."""
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
    arp += _mac(src_mac) + socket.inet_aton(src_ip) + _mac(dst_mac) + socket.inet_aton(dst_ip)
    return _ethernet(dst_mac, src_mac, 0x0806, arp + trailer, vlan)


IPV6_ALL_NODES = "ff02::1"
ICMPV6 = 58
UDP = 17
ND_ROUTER_ADVERT = 134
ND_NEIGHBOR_ADVERT = 136
ND_OPTION_TARGET_LLADDR = 2
ND_OPTION_EXPERIMENT = 253  # RFC 4727: carries a marker as a well-formed option


def _ipv6_multicast_mac(address: str) -> str:
    low = socket.inet_pton(socket.AF_INET6, address)[-4:]
    return "33:33:" + ":".join(f"{b:02x}" for b in low)


def ipv6_frame(
    src_mac: str, src_ip: str, next_header: int, payload: bytes, dst_ip: str = IPV6_ALL_NODES
) -> bytes:
    """An Ethernet frame with an IPv6 packet (hop limit 255) to a multicast ``dst_ip``;
    the checksum of a UDP or ICMPv6 ``payload`` (at bytes 6 or 2) is filled in."""
    src, dst = (socket.inet_pton(socket.AF_INET6, a) for a in (src_ip, dst_ip))
    pseudo = src + dst + struct.pack("!I3xB", len(payload), next_header)
    offset = 6 if next_header == UDP else 2
    checksum = struct.pack("!H", _checksum(pseudo + payload) or 0xFFFF)
    payload = payload[:offset] + checksum + payload[offset + 2 :]
    header = struct.pack("!IHBB", 6 << 28, len(payload), next_header, 255) + src + dst
    return _ethernet(_ipv6_multicast_mac(dst_ip), src_mac, 0x86DD, header + payload, None)


def _marker_option(marker: bytes) -> bytes:
    units = (2 + len(marker) + 7) // 8
    return struct.pack("!BB", ND_OPTION_EXPERIMENT, units) + marker.ljust(units * 8 - 2, b"\0")


def udp6_frame(src_mac: str, src_ip: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram over IPv6 to all nodes."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return ipv6_frame(src_mac, src_ip, UDP, udp)


def router_advert(src_mac: str, src_ip: str, marker: bytes) -> bytes:
    """A router advertisement to all nodes: "I am your default router for 30 minutes"."""
    body = struct.pack("!BBHBBHII", ND_ROUTER_ADVERT, 0, 0, 64, 0, 1800, 0, 0)
    return ipv6_frame(src_mac, src_ip, ICMPV6, body + _marker_option(marker))


def neighbour_advert(src_mac: str, src_ip: str, target: str, marker: bytes) -> bytes:
    """An unsolicited neighbour advertisement to all nodes: "``target`` is at ``src_mac``"."""
    body = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, 0x20000000)  # override
    body += socket.inet_pton(socket.AF_INET6, target)
    body += struct.pack("!BB", ND_OPTION_TARGET_LLADDR, 1) + _mac(src_mac)
    return ipv6_frame(src_mac, src_ip, ICMPV6, body + _marker_option(marker))


def _ethernet(dst: str, src: str, ethertype: int, payload: bytes, vlan: int | None) -> bytes:
    head = _mac(dst) + _mac(src)
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan & 0x0FFF)
    frame = head + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * max(0, 60 - len(frame))


def _qmp(dom: libvirt.virDomain, command: str, **arguments: object) -> object:
    reply = libvirt_qemu.qemuMonitorCommand(
        dom, json.dumps({"execute": command, "arguments": arguments}), 0
    )
    return json.loads(reply).get("return")


def nic_netdev(dom: libvirt.virDomain) -> str:
    """The QEMU id of the tap backend of the domain's first NIC (libvirt: "host" + alias)."""
    live = etree.fromstring(dom.XMLDesc(0).encode())
    alias = live.find("./devices/interface/alias")
    assert alias is not None, "the running domain's NIC has no alias"
    return "host" + str(alias.get("name"))


def send_from_guest(uri: str, uuid: str, frames: list[bytes]) -> None:
    """Put ``frames`` on the wire of the guest's first NIC, as if the guest sent them."""
    conn = libvirt.open(uri)
    workdir = tempfile.mkdtemp(prefix="cdinj-")
    path = os.path.join(workdir, "s")
    number = next(_ids)
    chardev, filter_id = "cdinjc%d" % number, "cdinjf%d" % number
    try:
        dom = conn.lookupByUUIDString(uuid)
        # NOTE: QEMU runs as libvirt-qemu and connects to our socket.
        os.chmod(workdir, 0o755)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(path)
            os.chmod(path, 0o777)
            server.listen(1)
            server.settimeout(30)
            address = {"type": "unix", "data": {"path": path}}
            backend = {"type": "socket", "data": {"addr": address, "server": False}}
            _qmp(dom, "chardev-add", id=chardev, backend=backend)
            try:
                peer, _ = server.accept()
                with peer:
                    _qmp(
                        dom,
                        "object-add",
                        **{
                            "qom-type": "filter-redirector",
                            "id": filter_id,
                            "netdev": nic_netdev(dom),
                            "queue": "rx",
                            "indev": chardev,
                        },
                    )
                    try:
                        for frame in frames:
                            packet = b"\0" * VIRTIO_NET_HDR_LEN + frame
                            peer.sendall(struct.pack("!I", len(packet)) + packet)
                        # NOTE: an answered QMP command after the writes: QEMU's
                        # main loop has had its turns to read them.
                        _qmp(dom, "query-status")
                    finally:
                        _qmp(dom, "object-del", id=filter_id)
            finally:
                _qmp(dom, "chardev-remove", id=chardev)
    finally:
        conn.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.rmdir(workdir)


def send_raw(ns: str, ifname: str, frames: list[bytes]) -> None:
    """Send ``frames`` as they are on ``ifname`` in namespace ``ns`` (a packet socket):
    what a guest's own raw socket would put on its NIC."""
    sock = netns.create_socket(ns, socket.AF_PACKET, socket.SOCK_RAW, 0, flags=0)
    with sock:
        sock.bind((ifname, 0))
        for frame in frames:
            sock.send(frame)


class TapCapture:
    """Every frame on tap ``ifname`` in namespace ``ns`` from now on (both ways)."""

    def __init__(self, ns: str, ifname: str) -> None:
        self.ifname = ifname
        self.sock = netns.create_socket(
            ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL), flags=0
        )
        self.sock.bind((ifname, 0))
        self.frames: list[bytes] = []

    def _read(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            while True:
                self.frames.append(self.sock.recv(65536))
                self.sock.settimeout(0)

    def seen(self, marker: bytes) -> list[bytes]:
        """The frames so far that carry ``marker``."""
        self._read(0.05)
        return [f for f in self.frames if marker in f]

    def wait_for(self, marker: bytes, timeout: float) -> bytes | None:
        """The first frame that carries ``marker``, waiting up to ``timeout`` s; None if none."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.seen(marker)
            if found or time.monotonic() >= deadline:
                return found[0] if found else None
            self._read(min(0.5, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def captures(taps: dict[str, tuple[str, str]]) -> Iterator[dict[str, TapCapture]]:
    """{name: TapCapture} of ``taps`` ({name: (namespace, tap)}), closed afterwards."""
    opened: dict[str, TapCapture] = {}
    try:
        for name, (ns, tap) in taps.items():
            opened[name] = TapCapture(ns, tap)
        yield opened
    finally:
        for capture in opened.values():
            capture.close()
