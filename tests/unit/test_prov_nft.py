"""The host-side reading of `nft -j list ruleset` (playbooks/roles/provisioner/module_utils/prov_nft.py),
which the firewall phase and continuous compliance both judge by. Pure functions: run here."""

from __future__ import annotations

import ipaddress

from tests.module_utils import load_module_util

nft = load_module_util("prov_nft")

N = ipaddress.ip_network


def rule(handle: int, *expr: dict, comment: str | None = None) -> dict:
    body = {"family": "inet", "table": "filter", "chain": "input", "handle": handle, "expr": list(expr)}
    if comment:
        body["comment"] = comment
    return {"rule": body}


def dport(proto: str, right: object) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": right}}


def saddr(family: str, right: object) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": family, "field": "saddr"}}, "right": right}}


RULESET = {"nftables": [
    {"metainfo": {"version": "1.0.6"}},
    {"table": {"family": "inet", "name": "filter", "handle": 1}},
    {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter",
               "hook": "input", "prio": 0, "policy": "drop"}},
    rule(4, saddr("ip", {"set": [{"prefix": {"addr": "192.168.121.0", "len": 24}}, "10.9.9.9"]}),
         dport("tcp", 22), {"accept": None}, comment="prov: ssh from management"),
    rule(5, dport("tcp", {"set": [8080, 8443]}), saddr("ip", {"prefix": {"addr": "10.0.0.0", "len": 8}}),
         {"counter": {"packets": 0, "bytes": 0}}, {"accept": None}),
    rule(6, dport("tcp", 443), {"accept": None}),
    rule(7, dport("tcp", 8080), saddr("ip", {"range": ["172.16.0.0", "172.16.0.255"]}), {"accept": None}),
    rule(8, {"match": {"op": "==", "left": {"ct": {"key": "state"}}, "right": ["established"]}}, {"accept": None}),
    {"rule": {"family": "ip", "table": "nat", "chain": "postrouting", "handle": 9, "expr": [{"masquerade": None}]}},
]}


def test_summarize_reads_policy_rules_and_sources() -> None:
    chain, rules, sig = nft.summarize(RULESET)
    assert chain["policy"] == "drop"
    assert len(rules) == 5  # the nat rule is not ours
    ssh = rules[0]
    assert (ssh["verdict"], ssh["proto"], ssh["ports"], ssh["comment"]) == ("accept", "tcp", [22],
                                                                             "prov: ssh from management")
    assert ssh["saddr"] == {N("192.168.121.0/24"), N("10.9.9.9/32")}
    assert rules[1]["ports"] == [8080, 8443] and rules[1]["saddr"] == {N("10.0.0.0/8")} and not rules[1]["other"]
    assert rules[2]["saddr"] is None  # from anywhere
    assert rules[3]["saddr"] == {N("172.16.0.0/24")}  # a range is summarised
    assert rules[4]["other"] is True  # conntrack match: not a port rule
    assert len(sig) == 64


def test_signature_ignores_handles_but_not_rules() -> None:
    _, _, sig = nft.summarize(RULESET)
    renumbered = {"nftables": [dict(o, rule=dict(o["rule"], handle=o["rule"]["handle"] + 100)) if "rule" in o else o
                               for o in RULESET["nftables"]]}
    assert nft.summarize(renumbered)[2] == sig
    fewer = {"nftables": [o for o in RULESET["nftables"] if o.get("rule", {}).get("handle") != 6]}
    assert nft.summarize(fewer)[2] != sig


def test_open_ports_merges_sources_and_hides_the_management_ssh_rule() -> None:
    _, rules, _ = nft.summarize(RULESET)
    ports = nft.open_ports(rules, 22, {N("192.168.121.0/24"), N("10.9.9.9/32")})
    assert ports == [
        {"port": 8080, "proto": "tcp", "sources": ["10.0.0.0/8", "172.16.0.0/24"]},
        {"port": 8443, "proto": "tcp", "sources": ["10.0.0.0/8"]},
        {"port": 443, "proto": "tcp", "sources": []},
    ]
    # SSH open beyond the management networks is reported, not hidden.
    assert {"port": 22, "proto": "tcp", "sources": ["10.9.9.9/32", "192.168.121.0/24"]} in \
        nft.open_ports(rules, 22, {N("192.168.121.0/24")})


def test_ipv4_mapped_addresses_are_read_as_ipv4() -> None:
    assert nft.net("::ffff:10.0.0.0/104") == N("10.0.0.0/8")
    assert str(nft.addr("::ffff:192.0.2.1")) == "192.0.2.1"
