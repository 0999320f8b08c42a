"""A small ONC RPC portmapper for the NFS tests: portmap v2 and rpcbind v3/v4.

Why not Debian's rpcbind: it binds every address (0.0.0.0:111) and aborts
("double free") when told to bind loopback only. nfs-ganesha needs a
portmapper to register with (through the unix socket first, then [::1]:111),
and QEMU's NFS client (NFSv3 only) asks one for the ports of MOUNT and NFS.

It serves, on ``HOST:PORT`` (TCP and UDP) and on a unix socket:

- portmap v2: NULL, SET, UNSET, GETPORT, DUMP;
- rpcbind v3/v4: NULL, SET, UNSET, GETADDR, DUMP, GETVERSADDR (v4).

Registrations live in memory only; anyone who can reach the sockets may
register (a test fixture on loopback). Run::

    python portmapper.py --host 127.0.0.1 --port 111 --unix /run/rpcbind.sock

It prints ``ready`` on standard output once every socket listens, and on
SIGTERM or SIGINT removes the unix socket and exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
from typing import Any

PMAP_PROG = 100000
IPPROTO = {6: "tcp", 17: "udp"}
# accept_stat values (RFC 5531)
SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS = range(5)
MAX_RECORD = 64 * 1024


class Decoder:
    """XDR decoding of one call's bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u32(self) -> int:
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def opaque(self) -> bytes:
        length = self.u32()
        if length > len(self.data) - self.pos:
            raise ValueError("opaque longer than the message")
        value = self.data[self.pos : self.pos + length]
        self.pos += length + (-length % 4)
        return value

    def string(self) -> str:
        return self.opaque().decode("ascii", "replace")


def u32(value: int) -> bytes:
    return struct.pack(">I", value & 0xFFFFFFFF)


def xdr_string(value: str) -> bytes:
    raw = value.encode("ascii")
    return u32(len(raw)) + raw + bytes(-len(raw) % 4)


def port_of(uaddr: str) -> int:
    """The port of a universal address ("h1.h2.h3.h4.p1.p2", "::1.p1.p2")."""
    parts = uaddr.rsplit(".", 2)
    return int(parts[1]) * 256 + int(parts[2])


class Registry:
    """(prog, vers, netid) -> (universal address, owner)."""

    def __init__(self, own_uaddr: dict[str, str]) -> None:
        self.lock = threading.Lock()
        self.entries: dict[tuple[int, int, str], tuple[str, str]] = {}
        for netid, uaddr in own_uaddr.items():
            for vers in (2, 3, 4):
                self.entries[(PMAP_PROG, vers, netid)] = (uaddr, "superuser")

    def set(self, prog: int, vers: int, netid: str, uaddr: str, owner: str) -> bool:
        with self.lock:
            if (prog, vers, netid) in self.entries:
                return False
            self.entries[(prog, vers, netid)] = (uaddr, owner)
            return True

    def unset(self, prog: int, vers: int, netid: str | None) -> bool:
        with self.lock:
            gone = [
                key
                for key in self.entries
                if key[0] == prog and key[1] == vers and netid in (None, "", key[2])
            ]
            for key in gone:
                del self.entries[key]
            return bool(gone)

    def getaddr(self, prog: int, vers: int, netid: str) -> str:
        """The address for ``netid``, or one for the same transport on the
        other address family (a v4-mapped v6 address reads as v4)."""
        with self.lock:
            found = self.entries.get((prog, vers, netid))
            if found:
                return found[0]
            transport = netid.rstrip("6")
            for (p, v, n), (uaddr, _) in self.entries.items():
                if p == prog and v == vers and n.rstrip("6") == transport:
                    port = port_of(uaddr)
                    host = "127.0.0.1" if netid == transport else "::1"
                    return "%s.%d.%d" % (host, port >> 8, port & 0xFF)
            return ""

    def getport(self, prog: int, vers: int, prot: int) -> int:
        transport = IPPROTO.get(prot)
        if transport is None:
            return 0
        uaddr = self.getaddr(prog, vers, transport)
        return port_of(uaddr) if uaddr else 0

    def dump(self) -> list[tuple[int, int, str, str, str]]:
        with self.lock:
            return [(p, v, n, a, o) for (p, v, n), (a, o) in sorted(self.entries.items())]


def _reply(xid: int, accept: int, body: bytes = b"") -> bytes:
    # REPLY, MSG_ACCEPTED, verifier AUTH_NONE (flavor 0, empty), accept_stat.
    return u32(xid) + u32(1) + u32(0) + u32(0) + u32(0) + u32(accept) + body


def handle_call(registry: Registry, data: bytes) -> bytes | None:
    """The reply to one RPC call message, or None for something else."""
    args = Decoder(data)
    try:
        xid, msg_type = args.u32(), args.u32()
        if msg_type != 0:
            return None
        rpcvers, prog, vers, proc = args.u32(), args.u32(), args.u32(), args.u32()
        args.u32(), args.opaque()  # credential: anyone may register here
        args.u32(), args.opaque()  # verifier
    except (struct.error, ValueError):
        return None
    if rpcvers != 2:
        # MSG_DENIED, RPC_MISMATCH, low 2, high 2
        return u32(xid) + u32(1) + u32(1) + u32(0) + u32(2) + u32(2)
    if prog != PMAP_PROG:
        return _reply(xid, PROG_UNAVAIL)
    if vers not in (2, 3, 4):
        return _reply(xid, PROG_MISMATCH, u32(2) + u32(4))
    try:
        if proc == 0:
            return _reply(xid, SUCCESS)
        if vers == 2:
            return _reply(xid, SUCCESS, _pmap2(registry, proc, args))
        return _reply(xid, SUCCESS, _rpcb(registry, proc, args))
    except LookupError:
        return _reply(xid, PROC_UNAVAIL)
    except (struct.error, ValueError):
        return _reply(xid, GARBAGE_ARGS)


def _pmap2(registry: Registry, proc: int, args: Decoder) -> bytes:
    if proc == 4:  # DUMP
        out, seen = b"", set()
        for prog, vers, netid, uaddr, _ in registry.dump():
            # NOTE: v2 has no address families: a tcp6-only service shows as tcp.
            prot = {"tcp": 6, "udp": 17}.get(netid.rstrip("6"))
            if prot and (prog, vers, prot) not in seen:
                seen.add((prog, vers, prot))
                out += u32(1) + u32(prog) + u32(vers) + u32(prot) + u32(port_of(uaddr))
        return out + u32(0)
    prog, vers, prot, port = args.u32(), args.u32(), args.u32(), args.u32()
    if proc == 1:  # SET
        transport = IPPROTO.get(prot)
        uaddr = "0.0.0.0.%d.%d" % (port >> 8, port & 0xFF)
        if transport is None:
            return u32(0)
        return u32(registry.set(prog, vers, transport, uaddr, "unknown"))
    if proc == 2:  # UNSET: every transport
        return u32(registry.unset(prog, vers, None))
    if proc == 3:  # GETPORT
        return u32(registry.getport(prog, vers, prot))
    raise LookupError(proc)


def _rpcb(registry: Registry, proc: int, args: Decoder) -> bytes:
    if proc == 4:  # DUMP
        out = b""
        for entry in registry.dump():
            prog, vers, netid, uaddr, owner = entry
            out += u32(1) + u32(prog) + u32(vers)
            out += xdr_string(netid) + xdr_string(uaddr) + xdr_string(owner)
        return out + u32(0)
    if proc not in (1, 2, 3, 9):
        raise LookupError(proc)
    prog, vers = args.u32(), args.u32()
    netid, uaddr, owner = args.string(), args.string(), args.string()
    if proc == 1:  # SET
        return u32(registry.set(prog, vers, netid, uaddr, owner))
    if proc == 2:  # UNSET
        return u32(registry.unset(prog, vers, netid))
    return xdr_string(registry.getaddr(prog, vers, netid))  # GETADDR, GETVERSADDR


class _StreamHandler(socketserver.BaseRequestHandler):
    """Record-marked RPC over a stream (TCP or unix socket)."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30)
        try:
            while True:
                record = b""
                while True:
                    header = _recv_exact(sock, 4)
                    if header is None:
                        return
                    (mark,) = struct.unpack(">I", header)
                    fragment = _recv_exact(sock, mark & 0x7FFFFFFF)
                    if fragment is None:
                        return
                    record += fragment
                    if len(record) > MAX_RECORD:
                        return
                    if mark & 0x80000000:
                        break
                reply = handle_call(self.server.registry, record)  # type: ignore[attr-defined]
                if reply is not None:
                    sock.sendall(struct.pack(">I", 0x80000000 | len(reply)) + reply)
        except OSError:
            return


def _recv_exact(sock: socket.socket, length: int) -> bytes | None:
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _DatagramHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = handle_call(self.server.registry, data)  # type: ignore[attr-defined]
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def serve(host: str, port: int, unix_path: str | None) -> None:
    """Serve until SIGTERM/SIGINT; print ``ready`` once listening."""
    uaddr = "%s.%d.%d" % (host, port >> 8, port & 0xFF)
    registry = Registry({"tcp": uaddr, "udp": uaddr})
    servers: list[Any] = [
        _TCPServer((host, port), _StreamHandler),
        socketserver.ThreadingUDPServer((host, port), _DatagramHandler),
    ]
    if unix_path:
        if os.path.exists(unix_path):
            os.unlink(unix_path)  # a stale socket: the caller checked nobody serves it
        servers.append(_UnixServer(unix_path, _StreamHandler))
        os.chmod(unix_path, 0o666)
    stop = threading.Event()
    for server in servers:
        server.registry = registry
        threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True).start()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("ready", flush=True)
    try:
        while not stop.wait(1):
            pass
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        if unix_path:
            try:
                os.unlink(unix_path)
            except FileNotFoundError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=111)
    parser.add_argument("--unix", default="/run/rpcbind.sock", help="'' for none")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.unix or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
