"""rtnetlink helpers of the network plugins: bridges, VLAN, VXLAN and tap devices, the FDB.

Everything goes through one pyroute2 rtnetlink socket, never through the
``ip``/``bridge`` commands. Given a network namespace name, the socket is
opened inside that namespace (pyroute2 creates it there in a short-lived
child), so every call acts on that namespace's devices: tests use this to
simulate several hosts on one machine.

The ``ensure_*`` verbs are idempotent (``may_exist``): they create what is
missing, converge MTU, master and state, and refuse (:class:`LinkError`)
when a device of that name exists with other settings; the device is ours
by name only, so a foreign one is never reconfigured. They return whether
they created the device, so that a caller can undo exactly what it made.

The primitives at the bottom are the only methods that talk to the kernel.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_GETNEIGH
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from network_plugins import tap

LOG = logging.getLogger(__name__)

IFNAMSIZ = 15  # longest interface name the kernel takes (16 bytes with the NUL)
FLOOD_MAC = "00:00:00:00:00:00"  # VXLAN FDB entry used for broadcast, unknown unicast, multicast
IFF_UP = 0x1
SYS_CLASS_NET = "/sys/class/net"
IN6_ADDR_GEN_MODE_NONE = 1

_NOT_SUPPORTED_HINT = {
    "vlan": "the kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q / module 8021q)",
    "vxlan": "the kernel has no VXLAN support (CONFIG_VXLAN / module vxlan)",
    "bridge": "the kernel has no bridge support (CONFIG_BRIDGE / module bridge)",
}


class LinkError(Exception):
    """A netlink operation failed, or a device exists with other settings."""

    def __init__(self, action: str, ifname: str, reason: str, code: int | None = None) -> None:
        self.action = action
        self.ifname = ifname
        self.reason = reason
        self.errno = code
        super().__init__(f"{action} {ifname}: {reason}")


@dataclass(frozen=True)
class Link:
    """What the helpers need to know about one device."""

    name: str
    index: int
    kind: str | None  # None for plain devices (physical NICs)
    mtu: int
    up: bool
    # NOTE: master and parent are names; Netlink's internal lookups may leave
    # them None when only the index matters (Netlink._get, resolve=False).
    master: str | None = None  # name of the bridge it is a port of
    parent: str | None = None  # lower device of a VLAN
    data: dict[str, Any] = field(default_factory=dict)  # vxlan: id, local, port, learning; vlan: id
    address: str | None = None  # MAC address


def derived_ifname(base: str, suffix: str) -> str:
    """``base + suffix`` within IFNAMSIZ: a long ``base`` is cut and 4 hex digits of its
    SHA-256 added, so that two long names that start alike still differ."""
    name = base + suffix
    if len(name) <= IFNAMSIZ:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:4]
    return base[: IFNAMSIZ - len(suffix) - len(digest)] + digest + suffix


def check_ifname(name: str) -> str | None:
    """Why ``name`` cannot be a Linux interface name, or None."""
    if not name or len(name) > IFNAMSIZ:
        return f"{name!r} is not 1-{IFNAMSIZ} characters long"
    if name in (".", "..") or any(c in "/:" or c.isspace() for c in name):
        return f"{name!r} has a character Linux refuses in interface names"
    return None


class Netlink:
    """One rtnetlink socket, optionally in the network namespace ``netns``.

    Thread-safe: calls are serialized by a lock (pyroute2's sync API runs an
    event loop per socket and does not expect concurrent callers).
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._lock = threading.RLock()
        try:
            # NOTE: flags=0: a missing namespace is an error; pyroute2's
            # default (O_CREAT) would silently create an empty one.
            self._ipr = NetNS(netns, flags=0) if netns else IPRoute()
        except OSError as exc:
            where = f"network namespace {netns!r}" if netns else "the host namespace"
            raise LinkError("open netlink in", where, exc.strerror or str(exc), exc.errno) from exc

    def close(self) -> None:
        with self._lock:
            self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- idempotent verbs -------------------------------------------------

    def ensure_bridge(self, name: str, mtu: int) -> bool:
        """A bridge ``name`` (STP off, no IPv6 link-local), up, with ``mtu``."""
        with self._lock:
            link = self.link(name)
            created = link is None
            if link is None:
                self._create(name, "bridge")
                link = self._require(name, "create bridge")
            elif link.kind != "bridge":
                raise LinkError("ensure bridge", name, f"exists as {_kind(link)}")
            try:
                self._converge(link, mtu=mtu)
            except LinkError:
                if created:
                    self.delete(name)
                raise
            if created:
                LOG.info("Created bridge %s (mtu %d)%s", name, mtu, self._where())
            return created

    def ensure_vxlan(
        self, name: str, vni: int, local_ip: str, port: int, mtu: int, bridge: str
    ) -> bool:
        """A VXLAN device with source-address learning off, a port of ``bridge``, up."""
        want = {"id": vni, "local": local_ip, "port": port, "learning": False}
        with self._lock:
            master = self._bridge(bridge, name)
            link = self._get(name, known=(master,))
            created = link is None
            if link is None:
                self._create(name, "vxlan", vni=vni, local=local_ip, port=port)
                link = self._require(name, "create vxlan", known=(master,))
            elif link.kind != "vxlan":
                raise LinkError("ensure vxlan", name, f"exists as {_kind(link)}")
            else:
                _check_same(name, "vxlan", want, link.data)
            self._attach(link, master, mtu, created)
            if created:
                LOG.info(
                    "Created %s (vni %d, local %s:%d)%s", name, vni, local_ip, port, self._where()
                )
            return created

    def ensure_vlan(self, name: str, parent: str, vid: int, mtu: int, bridge: str) -> bool:
        """A VLAN ``vid`` device on ``parent``, a port of ``bridge``, up (``parent`` up too)."""
        with self._lock:
            lower = self._require(parent, "ensure vlan on")
            master = self._bridge(bridge, name)
            link = self._get(name, known=(lower, master))
            created = link is None
            if link is None:
                self._create(name, "vlan", parent=lower, vid=vid)
                link = self._require(name, "create vlan", known=(lower, master))
            elif link.kind != "vlan":
                raise LinkError("ensure vlan", name, f"exists as {_kind(link)}")
            else:
                _check_same(
                    name,
                    "vlan",
                    {"id": vid, "parent": parent},
                    {**link.data, "parent": link.parent},
                )
            try:
                if not lower.up:
                    self._set(lower, up=True)
            except LinkError:
                if created:
                    self.delete(name)
                raise
            self._attach(link, master, mtu, created)
            if created:
                LOG.info("Created %s (vlan %d on %s)%s", name, vid, parent, self._where())
            return created

    def enslave(self, name: str, bridge: str, mtu: int | None = None) -> None:
        """Make the existing device ``name`` a port of ``bridge``, up.

        :raises LinkError: no such device, or it is a port of another bridge.
        """
        with self._lock:
            link = self._require(name, "enslave")
            self._attach(link, self._bridge(bridge, name), mtu, created=False)

    def ensure_tap(self, name: str, mac: str, mtu: int) -> bool:
        """A persistent tap ``name`` (:mod:`network_plugins.tap`) with ``mac`` and ``mtu``, up.

        :raises LinkError: it cannot be made, or a device of that name is not a tap.
        """
        with self._lock:
            link = self._get(name, resolve=False)
            created = link is None
            if link is None:
                try:
                    tap.create_persistent(name, self.netns)
                except tap.TapError as exc:
                    raise LinkError(
                        "create tap", name, exc.strerror or str(exc), exc.errno
                    ) from exc
                link = self._require(name, "create tap", resolve=False)
            elif link.kind != "tun":
                raise LinkError("ensure tap", name, f"exists as {_kind(link)}")
            try:
                self._converge(link, mtu=mtu, address=mac.lower())
            except LinkError:
                if created:
                    self.delete(name)
                raise
            if created:
                LOG.info("Created tap %s (mtu %d)%s", name, mtu, self._where())
            return created

    def delete(self, name: str) -> bool:
        """Delete device ``name``; False when it did not exist."""
        with self._lock:
            link = self._get(name, resolve=False)
            if link is None:
                return False
            try:
                self._delete(link)
            except LinkError as exc:
                if exc.errno == errno.ENODEV:  # gone meanwhile
                    return False
                raise
            LOG.info("Deleted %s%s", name, self._where())
            return True

    # --- FDB ---------------------------------------------------------------

    def flood_destinations(self, dev: str) -> set[str]:
        """Remote VTEPs of the all-zero (flood) FDB entries of VXLAN ``dev``."""
        return {dst for mac, dst in self.fdb_entries(dev) if mac == FLOOD_MAC}

    def set_flood_destinations(self, dev: str, destinations: set[str]) -> tuple[set[str], set[str]]:
        """Make the flood entries of ``dev`` exactly ``destinations``; (added, removed).

        :raises LinkError: no device ``dev``, or the kernel refused a change.
        """
        with self._lock:
            # NOTE: the device is looked up once for the dump and every change
            # (not once per entry, as add_fdb/del_fdb do).
            link = self._require(dev, "read fdb of", resolve=False)
            current = {dst for mac, dst in self._fdb_dump(link) if mac == FLOOD_MAC}
            added, removed = destinations - current, current - destinations
            for dst in sorted(added):
                self._fdb("append", link, FLOOD_MAC, dst)
            for dst in sorted(removed):
                self._fdb_del(link, FLOOD_MAC, dst)
            if added or removed:
                LOG.info(
                    "Flood list of %s: +%s -%s%s",
                    dev,
                    sorted(added),
                    sorted(removed),
                    self._where(),
                )
            return added, removed

    def fdb_entries(self, dev: str) -> set[tuple[str, str]]:
        """(MAC, remote VTEP) pairs of the FDB entries of ``dev`` that have a destination."""
        with self._lock:
            return self._fdb_dump(self._require(dev, "read fdb of", resolve=False))

    def add_fdb(self, dev: str, mac: str, dst: str) -> None:
        """Append a static entry ``mac`` → ``dst`` (several destinations per MAC may coexist)."""
        with self._lock:
            self._fdb("append", self._require(dev, "add fdb entry to", resolve=False), mac, dst)

    def del_fdb(self, dev: str, mac: str, dst: str) -> None:
        """Remove the entry ``mac`` → ``dst``; missing entries are fine."""
        with self._lock:
            link = self._get(dev, resolve=False)
            if link is not None:
                self._fdb_del(link, mac, dst)

    # --- reading -------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        """The device ``name``, or None."""
        with self._lock:
            return self._get(name)

    def exists(self, name: str) -> bool:
        """Whether device ``name`` exists (cheap: for checks of many devices).

        NOTE: in the host's namespace a look at /sys/class/net (a stat, no
        netlink message to decode); in another namespace a netlink request.
        """
        if self.netns is None:
            return check_ifname(name) is None and os.path.exists(os.path.join(SYS_CLASS_NET, name))
        with self._lock:
            return self._get(name, resolve=False) is not None

    def ports(self, bridge: str) -> list[str]:
        """Names of the ports of ``bridge`` (empty when there is no such bridge)."""
        with self._lock:
            link = self._get(bridge, resolve=False)
            return [] if link is None else sorted(self._ports(link))

    def addresses(self) -> set[str]:
        """Every IP address configured in this namespace."""
        with self._lock:
            return self._addresses()

    # --- helpers -------------------------------------------------------------

    def _where(self) -> str:
        return f" in netns {self.netns}" if self.netns else ""

    def _require(
        self, name: str, action: str, known: tuple[Link, ...] = (), resolve: bool = True
    ) -> Link:
        link = self._get(name, known, resolve)
        if link is None:
            raise LinkError(action, name, "no such device" + self._where(), errno.ENODEV)
        return link

    def _bridge(self, bridge: str, port: str) -> Link:
        """The bridge ``bridge`` that ``port`` is to be a port of.

        :raises LinkError: no such device, or it is not a bridge.
        """
        master = self._require(bridge, "enslave " + port + " to")
        if master.kind != "bridge":
            raise LinkError("enslave " + port + " to", bridge, f"is {_kind(master)}")
        return master

    def _attach(self, link: Link, master: Link, mtu: int | None, created: bool) -> None:
        """Put ``link`` into bridge ``master`` and converge it; delete it again if ``created``."""
        try:
            if link.master not in (None, master.name):
                raise LinkError(
                    "add to bridge " + master.name, link.name, f"is a port of bridge {link.master}"
                )
            self._converge(link, mtu=mtu, master=master)
        except LinkError:
            if created:
                self.delete(link.name)
            raise

    def _fdb_del(self, link: Link, mac: str, dst: str) -> None:
        try:
            self._fdb("del", link, mac, dst)
        except LinkError as exc:
            if exc.errno != errno.ENOENT:  # already gone is fine
                raise

    def _converge(
        self,
        link: Link,
        mtu: int | None,
        master: Link | None = None,
        address: str | None = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if mtu is not None and link.mtu != mtu:
            changes["mtu"] = mtu
        if address is not None and link.address != address:
            changes["address"] = address
        if master is not None and link.master != master.name:
            changes["master"] = master
        if not link.up:
            # NOTE: no IPv6 link-local address on our devices: the host must
            # never speak (MLD, router solicitations) on a tenant network.
            changes["no_ipv6"] = True
            changes["up"] = True
        if changes:
            self._set(link, **changes)

    # --- primitives (the only methods that talk to the kernel) -------------

    def _call(self, action: str, name: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except NetlinkError as exc:
            reason = os.strerror(exc.code) if exc.code else str(exc)
            raise LinkError(action, name, reason, exc.code) from exc
        except OSError as exc:
            raise LinkError(action, name, exc.strerror or str(exc), exc.errno) from exc

    def _get(self, name: str, known: tuple[Link, ...] = (), resolve: bool = True) -> Link | None:
        """The device ``name``, or None.

        The kernel names a device's bridge and VLAN parent by index: those
        among ``known`` are named without a request, any other costs one
        more request, unless ``resolve`` is False (then ``master`` and
        ``parent`` are left None: for callers that need the index only).
        """
        if check_ifname(name):
            return None
        try:
            (msg,) = self._call("get", name, self._ipr.link, "get", ifname=name)
        except LinkError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        names = {link.index: link.name for link in known}
        return self._to_link(msg, names, resolve)

    def _to_link(self, msg: Any, names: dict[int, str], resolve: bool) -> Link:
        kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        info = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        data: dict[str, Any] = {}
        parent = None
        if kind == "vxlan" and info is not None:
            data = {
                "id": info.get_attr("IFLA_VXLAN_ID"),
                "local": info.get_attr("IFLA_VXLAN_LOCAL") or info.get_attr("IFLA_VXLAN_LOCAL6"),
                "port": info.get_attr("IFLA_VXLAN_PORT"),
                "learning": bool(info.get_attr("IFLA_VXLAN_LEARNING")),
            }
        elif kind == "vlan" and info is not None:
            data = {"id": info.get_attr("IFLA_VLAN_ID")}
            parent = self._name_of(msg.get_attr("IFLA_LINK"), names, resolve)
        return Link(
            name=msg.get_attr("IFLA_IFNAME"),
            index=msg["index"],
            kind=kind,
            mtu=msg.get_attr("IFLA_MTU"),
            up=bool(msg["flags"] & IFF_UP),
            master=self._name_of(msg.get_attr("IFLA_MASTER"), names, resolve),
            parent=parent,
            data=data,
            address=msg.get_attr("IFLA_ADDRESS"),
        )

    def _name_of(self, index: int | None, names: dict[int, str], resolve: bool) -> str | None:
        if not index:
            return None
        if index in names:
            return names[index]
        if not resolve:
            return None
        try:
            (msg,) = self._call("get", str(index), self._ipr.link, "get", index=index)
        except LinkError:
            return None
        return msg.get_attr("IFLA_IFNAME")

    def _create(self, name: str, kind: str, **spec: Any) -> None:
        if why := check_ifname(name):
            raise LinkError("create " + kind, name, why, errno.EINVAL)
        kwargs: dict[str, Any] = {"ifname": name, "kind": kind}
        if kind == "bridge":
            kwargs.update(br_stp_state=0, br_forward_delay=0)
        elif kind == "vxlan":
            kwargs.update(
                vxlan_id=spec["vni"],
                vxlan_port=spec["port"],
                vxlan_learning=0,
                **{"vxlan_local6" if ":" in spec["local"] else "vxlan_local": spec["local"]},
            )
        elif kind == "vlan":
            kwargs.update(link=spec["parent"].index, vlan_id=spec["vid"])
        try:
            self._call("create " + kind, name, self._ipr.link, "add", **kwargs)
        except LinkError as exc:
            if exc.errno == errno.EOPNOTSUPP and kind in _NOT_SUPPORTED_HINT:
                exc.reason = _NOT_SUPPORTED_HINT[kind]
                exc.args = (f"{exc.action} {name}: {exc.reason}",)
            raise

    def _set(
        self,
        link: Link,
        mtu: int | None = None,
        master: Link | None = None,
        up: bool | None = None,
        no_ipv6: bool = False,
        address: str | None = None,
    ) -> None:
        if no_ipv6:
            inet6 = {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE]]}
            self._call(
                "disable IPv6 addresses on",
                link.name,
                self._ipr.link,
                "set",
                index=link.index,
                IFLA_AF_SPEC={"attrs": [["AF_INET6", inet6]]},
            )
        kwargs: dict[str, Any] = {}
        if mtu is not None:
            kwargs["mtu"] = mtu
        if address is not None:
            kwargs["address"] = address
        if master is not None:
            kwargs["master"] = master.index
        if up is not None:
            kwargs["state"] = "up" if up else "down"
        if kwargs:
            action = "set " + " ".join(sorted(kwargs)) + " of"
            self._call(action, link.name, self._ipr.link, "set", index=link.index, **kwargs)

    def _delete(self, link: Link) -> None:
        self._call("delete", link.name, self._ipr.link, "del", index=link.index)

    def _ports(self, bridge: Link) -> list[str]:
        request = ifinfmsg()
        request["family"] = socket.AF_UNSPEC
        request["attrs"] = [("IFLA_MASTER", bridge.index)]
        links = self._call(
            "list ports of",
            bridge.name,
            self._dump,
            request,
            RTM_GETLINK,
            lambda: self._ipr.link("dump", master=bridge.index),
        )
        return [
            msg.get_attr("IFLA_IFNAME")
            for msg in links
            if msg.get_attr("IFLA_MASTER") == bridge.index
        ]

    def _fdb_dump(self, link: Link) -> set[tuple[str, str]]:
        # NOTE: an ifinfomsg naming the device, as `bridge fdb show dev` sends.
        request = ifinfmsg()
        request["family"] = socket.AF_BRIDGE
        request["index"] = link.index
        entries = self._call(
            "read fdb of",
            link.name,
            self._dump,
            request,
            RTM_GETNEIGH,
            lambda: self._ipr.fdb("dump", ifindex=link.index),
        )
        return {
            (msg.get_attr("NDA_LLADDR"), msg.get_attr("NDA_DST"))
            for msg in entries
            if msg["ifindex"] == link.index and msg.get_attr("NDA_DST")
        }

    def _dump(self, request: Any, msg_type: int, fallback: Callable[[], Any]) -> tuple[Any, ...]:
        """A dump the kernel filters, as the request says.

        NOTE: pyroute2's link("dump", master=...) and fdb("dump", ifindex=...)
        fetch and decode every link or FDB entry of the namespace and filter
        in Python (45 ms for 300 links, against 0.3 ms); its sync
        nlm_request() is broken in 0.9.7 (KeyError 'nlm_generator'), hence
        the async core, with the public (slow) way as the fallback.
        """
        ipr = self._ipr
        try:
            runner, core = ipr._generate_with_cleanup, ipr.asyncore.nlm_request
        except AttributeError:  # another pyroute2
            return tuple(fallback())
        return tuple(runner(core, request, msg_type))

    def _fdb(self, command: str, link: Link, mac: str, dst: str) -> None:
        action = (
            "add fdb entry %s dst %s to" if command != "del" else "delete fdb entry %s dst %s of"
        )
        # NOTE: pyroute2's default state is NUD_NOARP|NUD_PERMANENT with NTF_SELF,
        # exactly what `bridge fdb append ... dst` writes.
        self._call(
            action % (mac, dst),
            link.name,
            self._ipr.fdb,
            command,
            ifindex=link.index,
            lladdr=mac,
            dst=dst,
        )

    def _addresses(self) -> set[str]:
        return {
            msg.get_attr("IFA_ADDRESS")
            for msg in self._call("list", "addresses", self._ipr.get_addr)
        }


def _kind(link: Link) -> str:
    return f"a {link.kind} device" if link.kind else "a plain device"


def _check_same(name: str, kind: str, want: dict[str, Any], got: dict[str, Any]) -> None:
    diff = {key: got.get(key) for key, value in want.items() if got.get(key) != value}
    if diff:
        have = ", ".join(f"{key} {value}" for key, value in sorted(diff.items()))
        wanted = ", ".join(f"{key} {want[key]}" for key in sorted(diff))
        raise LinkError(
            "ensure " + kind,
            name,
            f"exists with {have} (wanted {wanted}); delete it or fix the configuration",
        )
