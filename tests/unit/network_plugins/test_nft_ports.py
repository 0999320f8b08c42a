"""The ``linux_bridge`` plugin's anti-spoofing table and elements, without the kernel
(tests/functional/network/test_anti_spoofing.py sends frames through them)."""

from __future__ import annotations

from network_plugins import nft_ports

MAC = "fa:16:3e:00:00:01"
LINK_LOCAL = "fe80::f816:3eff:fe00:1"


def _rules() -> list[str]:
    assert all(f"add rule bridge cd-antispoof prerouting {r}" in nft_ports.SKELETON
               for r in nft_ports.RULES)  # fmt: skip
    return list(nft_ports.RULES)


def test_no_port_is_a_dhcp_server_or_a_router_even_without_addresses() -> None:
    rules = _rules()
    l2only = rules.index("iifname @l2only accept")
    drops = rules[:l2only]
    assert "ether type ip udp sport 67 udp dport 68 drop" in drops
    assert "ether type ip6 udp sport 547 udp dport 546 drop" in drops
    assert "icmpv6 type { nd-router-advert, nd-redirect } drop" in drops
    # the MAC and tag checks come first, and only our taps meet any rule
    assert rules[:3] == [
        "iifname != @ports accept",
        "iifname . ether saddr != @macs drop",
        "ether type { 8021q, 8021ad } drop",
    ]
    assert rules[-1] == "drop"


def test_neighbour_advertisements_only_for_own_addresses() -> None:
    rules = _rules()
    na = rules.index("icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @na drop")
    assert na < rules.index("iifname . ip6 saddr @v6 accept")
    elements = nft_ports.port_elements("tapx", MAC, ["10.0.0.5", "fd00::5"])
    assert {key[1] for name, key in elements if name == "na"} == {
        "0xfd000000000000000000000000000005",
        "0xfe80000000000000f8163efffe000001",
    }


def test_an_ipv4_only_port_may_send_from_its_link_local_address() -> None:
    elements = nft_ports.port_elements("tapx", MAC.upper(), ["10.0.0.5/24"])
    assert elements == {
        ("ports", ("tapx",)),
        ("macs", ("tapx", MAC)),
        ("v4", ("tapx", "10.0.0.5")),
        ("v6", ("tapx", LINK_LOCAL)),
        ("na", ("tapx", "0xfe80000000000000f8163efffe000001")),
    }


def test_without_addresses_only_the_mac_is_checked() -> None:
    assert nft_ports.port_elements("tapx", MAC, []) == {
        ("ports", ("tapx",)),
        ("macs", ("tapx", MAC)),
        ("l2only", ("tapx",)),
    }


def test_elements_as_json_and_back() -> None:
    elements = nft_ports.port_elements("tapx", MAC, ["10.0.0.5", "fd00::5"])
    commands = nft_ports.element_commands("add", elements)
    assert {c["add"]["element"]["name"] for c in commands} == {"ports", "macs", "v4", "v6", "na"}
    back = {
        nft_ports._parse(c["add"]["element"]["name"], e)
        for c in commands
        for e in c["add"]["element"]["elem"]
    }
    assert back == elements
    # what the kernel lists for the na set: the shortest hex
    assert nft_ports._parse("na", {"concat": ["tapx", "0xfd000000000000000000000000000005"]}) == (
        "na",
        ("tapx", "0xfd000000000000000000000000000005"),
    )
