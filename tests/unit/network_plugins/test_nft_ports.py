"""The ``linux_bridge`` plugin's anti-spoofing rules and transactions, as nftables JSON, without
the kernel (tests/functional/network/test_anti_spoofing.py sends frames through them)."""

from __future__ import annotations

import json
from typing import Any

from network_plugins import nft_ports

MAC = "fa:16:3e:00:00:01"
LINK_LOCAL_HEX = "0xfe80000000000000f8163efffe000001"


def _text(rules: list[Any]) -> list[str]:
    return [json.dumps(rule, sort_keys=True) for rule in rules]


def _drops(rules: list[Any]) -> list[str]:
    return [r for r in _text(rules) if r.endswith('{"drop": null}]')]


def test_no_port_is_a_dhcp_server_or_a_router_even_without_addresses() -> None:
    for addresses in ([], ["10.0.0.5"], ["fd00::5"]):
        drops = "\n".join(_drops(nft_ports.port_rules(MAC, addresses)))
        assert '"right": 67' in drops and '"right": 68' in drops
        assert '"right": 547' in drops and '"right": 546' in drops
        assert '"nd-router-advert", "nd-redirect"' in drops


def test_first_rules_check_the_mac_and_refuse_vlan_tags() -> None:
    first, second, *_ = nft_ports.port_rules(MAC.upper(), ["10.0.0.5"])
    assert first[0]["match"] == {
        "op": "!=",
        "left": {"payload": {"protocol": "ether", "field": "saddr"}},
        "right": MAC,
    }
    assert second[0]["match"]["right"] == {"set": ["8021q", "8021ad"]}


def test_neighbour_advertisements_only_for_own_addresses() -> None:
    rules = nft_ports.port_rules(MAC, ["10.0.0.5", "fd00::5"])
    (na,) = [r for r in _text(rules) if "nd-neighbor-advert" in r]
    assert "0xfd000000000000000000000000000005" in na and LINK_LOCAL_HEX in na
    assert '"op": "!="' in na and na.endswith('{"drop": null}]')


def test_an_ipv4_only_port_may_send_from_its_link_local_address() -> None:
    rules = _text(nft_ports.port_rules(MAC, ["10.0.0.5"]))
    accepts = [r for r in rules if r.endswith('{"accept": null}]')]
    assert any('"fe80::f816:3eff:fe00:1"' in r and '"saddr"' in r for r in accepts)
    assert rules[-1] == '[{"drop": null}]'


def test_without_addresses_only_the_mac_is_checked() -> None:
    rules = _text(nft_ports.port_rules(MAC, []))
    assert len(rules) == 5 and all(r.endswith('{"drop": null}]') for r in rules)


def test_plug_replaces_the_ports_chain_in_one_transaction() -> None:
    commands = nft_ports.plug_commands("tapx", MAC, ["10.0.0.5"])
    verbs = [next(iter(c)) for c in commands]
    chain = {"family": "bridge", "table": "cd-antispoof", "name": "port-tapx"}
    # flushed before its rules are added: a second plug adds no duplicate
    assert commands.index({"flush": {"chain": chain}}) < verbs.index("add", 7)
    assert commands[-1] == {
        "add": {
            "element": {
                "family": "bridge",
                "table": "cd-antispoof",
                "name": "ports",
                "elem": [["tapx", {"jump": {"target": "port-tapx"}}]],
            }
        }
    }


def test_unplug_adds_before_it_deletes() -> None:
    verbs = [next(iter(c)) for c in nft_ports.unplug_commands("tapx")]
    assert verbs == ["add", "add", "add", "add", "delete", "flush", "delete"]
