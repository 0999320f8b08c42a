"""The in-process OpenFlow 1.4 client: byte layouts, and its errors against a fake switch.

Expected bytes are written out field by field from the OpenFlow 1.4
specification's structures (ofp_header, ofp_flow_mod, ofp_match, ...), not
computed with the code under test. The real switch is exercised by
tests/functional/network/test_ovs_traffic.py.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from network_plugins import exception, openflow, ovs_flows

COOKIE = 0xCD00000300000064


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# --- encoders ---------------------------------------------------------------------------


def test_hello_offers_openflow14_only() -> None:
    # version 5, type 0 HELLO, length 16, xid 1 | VERSIONBITMAP element, length 8, bit 5
    assert openflow.hello(1) == _hex("05 00 0010 00000001  0001 0008 00000020")


def test_flow_mod_add_with_one_field_and_no_instructions() -> None:
    flow = ovs_flows.Flow(10, 5, "in_port=1", "drop", COOKIE)
    expected = _hex(
        "05 0e 0040 00000000"  # header: FLOW_MOD, 64 bytes
        "cd00000300000064 0000000000000000"  # cookie, cookie_mask
        "0a 00 0000 0000 0005"  # table 10, ADD, idle, hard, priority 5
        "ffffffff ffffffff ffffffff 0000 0000"  # no buffer, any port, any group, flags, importance
        "0001 000c 80000004 00000001 00000000"  # OXM match: IN_PORT=1, padded to 16
    )
    assert ovs_flows.flow_mod(flow) == expected


def test_flow_mod_with_mod_vlan_vid_on_an_untagged_match() -> None:
    flow = ovs_flows.Flow(0, 100, "in_port=10,vlan_tci=0x0000/0x1fff", "mod_vlan_vid:4,NORMAL", 1)
    body = ovs_flows.flow_mod(flow)[48:]
    match = _hex("0001 0012 80000004 0000000a 80000c02 0000 000000000000")  # VLAN_VID=none
    actions = (
        _hex("0011 0008 8100 0000")  # PUSH_VLAN 0x8100
        + _hex("0019 0010 80000c02 1004 000000000000")  # SET_FIELD vlan_vid = 0x1000 | 4
        + _hex("0000 0010 fffffffa 0000 000000000000")  # OUTPUT NORMAL
    )
    instruction = _hex("0004 0030 00000000") + actions  # APPLY_ACTIONS, 48 bytes
    assert body == match + instruction


def test_flow_mod_tagged_match_sets_the_vid_without_a_push() -> None:
    (flow,) = ovs_flows.provider_out(6, 3, 101)
    encoded = ovs_flows.flow_mod(flow)
    assert _hex("0019 0010 80000c02 1065") in encoded  # 0x1000 | 101
    assert _hex("0011 0008") not in encoded


def test_goto_table_and_tunnel_fields() -> None:
    assert openflow.goto_table(10) == _hex("0001 0008 0a 000000")
    assert openflow.set_field(openflow.TUN_IPV4_DST, bytes([10, 0, 0, 2])) == _hex(
        "0019 0010 00014004 0a000002 00000000"  # NXM_NX_TUN_IPV4_DST (class 1, field 32)
    )
    inbound = ovs_flows.tunnel_network(2, 1, 0x65, 3, ["10.0.0.2"])[0]
    encoded = ovs_flows.flow_mod(inbound)
    assert _hex("80004c08 0000000000000065") in encoded  # TUNNEL_ID (field 38), 8 bytes
    assert _hex("00013e04 0a000002") in encoded  # NXM_NX_TUN_IPV4_SRC (field 31)


def test_match_fields_go_prerequisites_first() -> None:
    flow = ovs_flows.Flow(10, 100, "in_port=7,udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67", "NORMAL", 1)
    match = ovs_flows.flow_mod(flow)[48:]
    fields = [match[i + 2] >> 1 for i in (4, 12, 18, 23, 31, 37)]
    assert fields == [0, 5, 10, 11, 15, 16]  # in_port, eth_type, ip_proto, ipv4_src, udp ports


def test_deletion_by_cookie_in_every_table() -> None:
    encoded = ovs_flows.deletion_mod(ovs_flows.Deletion(COOKIE))
    assert encoded == _hex(
        "05 0e 0038 00000000"
        "cd00000300000064 ffffffffffffffff"
        "ff 03 0000 0000 0000"  # every table, DELETE (not strict)
        "ffffffff ffffffff ffffffff 0000 0000"
        "0001 0004 00000000"  # the empty match
    )


def test_bundle_messages() -> None:
    assert openflow.bundle_control(2, 7, openflow.BUNDLE_COMMIT, 3) == _hex(
        "05 21 0010 00000002  00000007 0004 0003"
    )
    inner = openflow.barrier(9)
    assert openflow.bundle_add(7, 3, inner) == _hex(
        "05 22 0018 00000009  00000007 0000 0003  05 14 0008 00000009"
    )


def test_every_rule_we_build_has_an_encoding() -> None:
    flows = (
        ovs_flows.integration_base(1, [10, 11])
        + ovs_flows.guest_port(100, "fa:16:3e:00:00:01", ["10.0.0.5", "fd00::5"])
        + ovs_flows.guest_port(101, "fa:16:3e:00:00:02", [])
        + ovs_flows.provider_in(10, 3, 101)
        + ovs_flows.provider_in(10, 4, None)
        + ovs_flows.provider_base(6)
        + ovs_flows.provider_out(6, 4, None)
        + ovs_flows.tunnel_base(1, [2, 3])
        + ovs_flows.tunnel_network(3, 1, 7, 5, ["fd00::2", "fd00::3"])
    )
    for flow in flows:
        encoded = ovs_flows.flow_mod(flow)
        assert struct.unpack_from("!H", encoded, 2)[0] == len(encoded)
        assert len(encoded) % 8 == 0


@pytest.mark.parametrize(
    "match, actions",
    [
        ("in_port=1,tcp", "NORMAL"),
        ("metadata=1", "NORMAL"),
        ("", "controller"),
        ("", "set_field:1->reg0"),
    ],
)
def test_a_rule_outside_the_subset_is_refused(match: str, actions: str) -> None:
    with pytest.raises(ValueError, match="no OpenFlow encoding"):
        ovs_flows.flow_mod(ovs_flows.Flow(0, 0, match, actions, 1))


def test_flow_stats_reply_and_errors_are_read() -> None:
    entry = struct.pack("!HBx8xHHHHH2xQQQ", 56, 23, 7, 0, 0, 0, 0, COOKIE, 0, 0)
    entry += _hex("0001 0004 00000000")  # empty match, no instructions
    stats, more = openflow.parse_flow_stats(struct.pack("!HH4x", 1, 1) + entry)
    assert stats == [openflow.FlowStat(23, 7, COOKIE)] and more
    failed = openflow.flow_mod(3, openflow.ADD, table=0)
    assert openflow.describe_error(struct.pack("!HH", 4, 5) + failed) == (
        "BAD_MATCH(4) code 5 for FLOW_MOD"
    )
    in_bundle = openflow.bundle_add(1, 3, failed)
    assert openflow.describe_error(struct.pack("!HH", 2, 4) + in_bundle).endswith("for FLOW_MOD")


# --- the connection, against a fake switch -------------------------------------------------

Handler = Callable[["FakeSwitch", socket.socket], None]


class FakeSwitch:
    """A unix socket that runs ``handlers`` on its connections, one connection each."""

    def __init__(self, path: str, handlers: list[Handler]) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self.received: list[tuple[int, int]] = []  # (type, xid) of every message read
        self.thread = threading.Thread(target=self._serve, args=(handlers,), daemon=True)
        self.thread.start()

    def _serve(self, handlers: list[Handler]) -> None:
        for handler in handlers:
            conn, _ = self.server.accept()
            with conn:
                handler(self, conn)

    def read(self, conn: socket.socket) -> tuple[int, int, bytes]:
        header = _exactly(conn, 8)
        _, msg_type, length, xid = openflow.HEADER.unpack(header)
        body = _exactly(conn, length - 8)
        self.received.append((msg_type, xid))
        return msg_type, xid, body

    def handshake(self, conn: socket.socket, bitmap: int = 1 << 5 | 1 << 4) -> None:
        self.read(conn)
        element = struct.pack("!HHI", 1, 8, bitmap)
        conn.sendall(openflow.message(openflow.HELLO, 1, element))

    def close(self) -> None:
        self.server.close()


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _obedient(switch: FakeSwitch, conn: socket.socket, refuse_adds: bool = False) -> None:
    """Handshake, then answer bundles: barrier replies, commit replies, refused adds."""
    switch.handshake(conn)
    while True:
        try:
            msg_type, xid, body = switch.read(conn)
        except EOFError:
            return
        if msg_type == openflow.BUNDLE_ADD_MESSAGE and refuse_adds:
            error = struct.pack("!HH", 4, 5) + body[8:][:64]
            conn.sendall(openflow.message(openflow.ERROR, xid, error))
        elif msg_type == openflow.BARRIER_REQUEST:
            conn.sendall(openflow.message(openflow.ECHO_REQUEST, 99, b"ping"))
            conn.sendall(openflow.message(openflow.BARRIER_REPLY, xid))
        elif msg_type == openflow.BUNDLE_CONTROL:
            bundle_id, kind, flags = struct.unpack("!IHH", body)
            if kind == openflow.BUNDLE_COMMIT:
                reply = struct.pack("!IHH", bundle_id, openflow.BUNDLE_COMMIT_REPLY, flags)
                conn.sendall(openflow.message(openflow.BUNDLE_CONTROL, xid, reply))


@pytest.fixture
def switch_path(tmp_path: object) -> Iterator[str]:
    yield f"{tmp_path}/br-int.mgmt"


def _connection(path: str, timeout: float = 2) -> openflow.Connection:
    return openflow.Connection(path, "br-int", timeout)


MODS = [
    ovs_flows.deletion_mod(ovs_flows.Deletion(COOKIE)),
    ovs_flows.flow_mod(ovs_flows.Flow(10, 5, "in_port=1", "drop", COOKIE)),
]


def test_a_bundle_is_opened_checked_and_committed(switch_path: str) -> None:
    switch = FakeSwitch(switch_path, [_obedient])
    conn = _connection(switch_path)
    conn.bundle(MODS)
    conn.bundle(MODS)  # the same connection again
    kinds = [kind for kind, _ in switch.received]
    once = [openflow.BUNDLE_CONTROL, openflow.BUNDLE_ADD_MESSAGE, openflow.BUNDLE_ADD_MESSAGE,
            openflow.BARRIER_REQUEST, openflow.BUNDLE_CONTROL]  # fmt: skip
    # the switch's echo request (sent before its barrier reply) is answered before the commit
    once.insert(4, openflow.ECHO_REPLY)
    assert kinds == [openflow.HELLO] + once + once
    conn.close()
    switch.close()


def test_a_refused_message_is_a_typed_error_and_nothing_is_committed(switch_path: str) -> None:
    switch = FakeSwitch(switch_path, [lambda s, c: _obedient(s, c, refuse_adds=True)])
    conn = _connection(switch_path)
    with pytest.raises(exception.OpenFlowError, match=r"bundle on bridge br-int.*BAD_MATCH\(4\)"):
        conn.bundle(MODS)
    switch.thread.join(2)
    commits = [k for k, _ in switch.received if k == openflow.BUNDLE_CONTROL]
    assert len(commits) == 1  # the open only
    switch.close()


def test_a_broken_connection_is_reopened_once(switch_path: str) -> None:
    def hang_up(switch: FakeSwitch, conn: socket.socket) -> None:
        switch.handshake(conn)  # then closes: ovs-vswitchd restarted

    switch = FakeSwitch(switch_path, [hang_up, _obedient])
    conn = _connection(switch_path)
    conn._call("connect", lambda: None)  # connected to the first "vswitchd"
    switch.thread.join(0.2)
    conn.bundle(MODS)  # lost, reopened, done
    assert [k for k, _ in switch.received].count(openflow.HELLO) == 2
    switch.close()


def test_a_switch_without_openflow14_is_refused(switch_path: str) -> None:
    switch = FakeSwitch(switch_path, [lambda s, c: s.handshake(c, bitmap=1 << 4)])
    with pytest.raises(exception.OpenFlowError, match="OpenFlow14 in the bridge's protocols"):
        _connection(switch_path).bundle(MODS)
    switch.close()


def test_a_silent_switch_times_out(switch_path: str) -> None:
    release = threading.Event()
    switch = FakeSwitch(switch_path, [lambda s, c: (s.handshake(c), release.wait(5))])
    with pytest.raises(exception.OpenFlowError, match="no answer within 0.3 s"):
        _connection(switch_path, timeout=0.3).bundle(MODS)
    release.set()
    switch.close()


def test_no_switch_is_a_typed_error() -> None:
    with pytest.raises(exception.OpenFlowError, match="connect on bridge br-int failed"):
        _connection("/nonexistent/br-int.mgmt").bundle(MODS)
    _connection("/nonexistent/br-int.mgmt").bundle([])  # nothing to do: no connection at all


def test_bridges_share_nothing_and_close(tmp_path: object) -> None:
    bridges = ovs_flows.OpenFlowBridges(str(tmp_path), 1)
    assert bridges.connection("br-int") is bridges.connection("br-int")
    assert bridges.connection("br-int").path == f"{tmp_path}/br-int.mgmt"
    assert bridges.connection("br-tun") is not bridges.connection("br-int")
    with pytest.raises(exception.OpenFlowError, match="bridge br-tun"):
        bridges.replace("br-tun", [])
    bridges.apply("br-int")  # nothing to do
    bridges.close()
