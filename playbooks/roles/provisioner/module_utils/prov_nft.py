"""Reading nftables back: the one interpretation of `nft -j list ruleset` that the firewall phase
(prov_nftables: is what we wrote live?) and continuous compliance (prov_compliance: has it drifted?)
both judge by. Runs on the managed host; imported as ansible.module_utils.prov_nft.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json


def net(value):
    """A network, with IPv4-mapped IPv6 written as the IPv4 network it is."""
    n = ipaddress.ip_network(str(value).strip(), strict=False)
    if n.version == 6 and n.network_address.ipv4_mapped:
        n = ipaddress.ip_network("%s/%d" % (n.network_address.ipv4_mapped, max(0, n.prefixlen - 96)))
    return n


def addr(value):
    a = ipaddress.ip_address(value.strip())
    if a.version == 6 and a.ipv4_mapped:
        a = a.ipv4_mapped
    return a


def values(right):
    """The elements of a match's right-hand side (a set is flattened)."""
    if isinstance(right, dict) and "set" in right:
        out = []
        for el in right["set"]:
            out.extend(values(el))
        return out
    return [right]


def nets(right):
    res = set()
    for v in values(right):
        if isinstance(v, str):
            res.add(net(v))
        elif isinstance(v, dict) and "prefix" in v:
            res.add(net("%s/%s" % (v["prefix"]["addr"], v["prefix"]["len"])))
        elif isinstance(v, dict) and "range" in v:
            for n in ipaddress.summarize_address_range(addr(v["range"][0]), addr(v["range"][1])):
                res.add(n)
    return res


def summarize(ruleset):
    """-> (input chain dict or None, [input rule summaries], signature of table inet filter).

    The signature hashes every chain and rule of `inet filter` without kernel handles, so it changes
    exactly when the rules do."""
    chain, rules, sig = None, [], []
    for obj in ruleset.get("nftables", []):
        body = obj.get("chain") or obj.get("rule")
        if not body or body.get("family") != "inet" or body.get("table") != "filter":
            continue
        clean = {k: v for k, v in body.items() if k != "handle"}
        sig.append({"chain" if "chain" in obj else "rule": clean})
        if "chain" in obj and body.get("name") == "input":
            chain = body
        if "rule" in obj and body.get("chain") == "input":
            s = {"verdict": None, "proto": None, "ports": [], "family": None, "saddr": None, "other": False,
                 "comment": body.get("comment")}
            for e in body.get("expr", []):
                if "accept" in e:
                    s["verdict"] = "accept"
                elif "drop" in e:
                    s["verdict"] = "drop"
                elif "match" in e:
                    left, right = e["match"].get("left", {}), e["match"].get("right")
                    pl = left.get("payload") if isinstance(left, dict) else None
                    if pl and pl.get("field") == "dport":
                        s["proto"] = pl.get("protocol")
                        s["ports"] = [v for v in values(right) if isinstance(v, int)]
                    elif pl and pl.get("field") == "saddr":
                        s["family"] = pl.get("protocol")
                        s["saddr"] = nets(right)
                    else:
                        s["other"] = True
                elif "counter" in e:
                    pass
                else:
                    s["other"] = True
            rules.append(s)
    return chain, rules, hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()


def open_ports(rules, ssh_port, mgmt):
    """What the input rules accept: [{port, proto, sources}] (sources [] = from anywhere), leaving out
    the management SSH rule (SSH on `ssh_port` from within the `mgmt` networks)."""
    mgmt = set(mgmt)
    found_ports = []
    for r in rules:
        if r["verdict"] != "accept" or not r["ports"]:
            continue
        for port in r["ports"]:
            srcs = sorted(str(n) for n in (r["saddr"] or []))
            if port == ssh_port and r["proto"] == "tcp" and r["saddr"] and set(r["saddr"]) <= mgmt:
                continue
            found = next((o for o in found_ports if o["port"] == port and o["proto"] == r["proto"]), None)
            if found is None:
                found_ports.append({"port": port, "proto": r["proto"], "sources": srcs})
            elif found["sources"] and srcs:
                found["sources"] = sorted(set(found["sources"]) | set(srcs))
            else:
                found["sources"] = []
    return found_ports
