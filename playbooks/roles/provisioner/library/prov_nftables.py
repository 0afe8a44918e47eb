#!/usr/bin/python
"""Default-deny nftables policy with SSH from management CIDRs; apply with a rollback timer; verify."""
from __future__ import annotations

DOCUMENTATION = r"""
module: prov_nftables
short_description: Render, validate, apply and verify the provisioner nftables policy
description:
  - table inet filter, chain input policy drop; lo, established/related, ICMP/ICMPv6,
    SSH (ssh_port) from the management CIDRs, the requested ports from their sources
    (no sources = any). forward/output accept.
  - The management CIDRs default to the /24 (IPv6 /64) of I(controller) (the controller's
    address as seen by the host, SSH_CLIENT). With I(keep_controller) the controller address is
    always allowed (never lock out the provisioning service).
  - Writes I(path) after C(nft -c) validation, enables nftables.service and applies with C(nft -f)
    only when the file or the live ruleset differs from the last applied state. Before applying it arms
    a transient systemd timer (prov-nft-rollback.timer) that restores the previous ruleset after
    I(rollback_seconds) unless the caller stops it (proving a new SSH connection works).
  - Verifies by reading back C(nft -j list ruleset) (policy drop, SSH rule, every requested port).
options:
  mgmt_cidrs:
    description: CIDRs allowed to reach SSH; empty = the /24 (IPv6 /64) of I(controller).
    type: list
    elements: str
    default: []
  controller:
    description: The controller's address as the host sees it (the SSH_CLIENT value; its first field is used).
    type: str
    default: ""
  keep_controller:
    description: Always allow SSH from the controller's own address.
    type: bool
    default: true
  ssh_port:
    description: The host's sshd port.
    type: int
    default: 22
  ports:
    description: Ports to open, as C({port, proto (tcp|udp), sources (list of CIDRs; empty = any)}).
    type: list
    elements: dict
    default: []
  profile:
    description: Label written into the file header (customer or pool).
    type: str
    default: customer
  job_id:
    description: Provisioning job id, written into the file header.
    type: str
    default: ""
  path:
    description: nftables configuration file to write.
    type: str
    default: /etc/nftables.conf
  rollback_seconds:
    description: Arm the rollback timer for this many seconds before applying; 0 = no rollback timer.
    type: int
    default: 120
  enable_service:
    description: Enable nftables.service so that the policy survives a reboot.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Default-deny policy, SSH from the management network, HTTPS from anywhere
  prov_nftables:
    mgmt_cidrs: [10.0.0.0/24]
    controller: "{{ provisioner_ssh_client.stdout | trim }}"
    ports:
      - {port: 443, proto: tcp, sources: []}
    rollback_seconds: 120
  register: provisioner_nft
"""

RETURN = r"""
applied:
  description: Whether the ruleset was applied (file or live ruleset differed).
  returned: success
  type: bool
  sample: true
file_changed:
  description: Whether I(path) was rewritten.
  returned: success
  type: bool
  sample: true
policy:
  description: Live policy of chain input in table inet filter.
  returned: success
  type: str
  sample: drop
open_ports:
  description: Ports the live ruleset opens, with their sources.
  returned: success
  type: list
  elements: dict
  sample: [{port: 22, proto: tcp, sources: [10.0.0.0/24]}]
mgmt_cidrs:
  description: Management CIDRs in effect.
  returned: success
  type: list
  elements: str
  sample: [10.0.0.0/24]
ssh_port:
  description: The SSH port allowed from the management CIDRs.
  returned: success
  type: int
  sample: 22
controller:
  description: Controller address (null when unknown).
  returned: success
  type: str
  sample: 10.0.0.5
controller_added:
  description: Whether the controller address was added because the management CIDRs did not cover it.
  returned: success
  type: bool
  sample: false
rollback_armed:
  description: Whether the rollback timer is armed (the caller must stop it after a fresh SSH connection).
  returned: always
  type: bool
  sample: true
rollback_unit:
  description: Name of the rollback timer unit.
  returned: success
  type: str
  sample: prov-nft-rollback.timer
profile:
  description: The I(profile) given.
  returned: success
  type: str
  sample: customer
path:
  description: The configuration file.
  returned: success
  type: str
  sample: /etc/nftables.conf
"""

import hashlib
import ipaddress
import json
import os
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prov_block import run, write_atomic
from ansible.module_utils.prov_nft import addr, net, open_ports, summarize

STATE_DIR = "/var/lib/provisioner"
ROLLBACK_UNIT = "prov-nft-rollback"


def split(nets):
    """-> (v4, v6) collapsed (no overlapping set elements) and sorted"""
    v4 = list(ipaddress.collapse_addresses(n for n in nets if n.version == 4))
    v6 = list(ipaddress.collapse_addresses(n for n in nets if n.version == 6))
    return v4, v6


def nft_set(nets):
    return "{ %s }" % ", ".join(str(n) for n in nets)


def render(mgmt, ssh_port, ports, profile, job_id):
    lines = [
        "#!/usr/sbin/nft -f",
        "# Managed by provisioner (profile: %s%s). Manual changes are overwritten." % (
            profile, ", job: %s" % job_id if job_id else ""),
        "flush ruleset",
        "",
        "table inet filter {",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        '\t\tiif "lo" accept',
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        "\t\tmeta l4proto 1 accept",  # icmp
        "\t\tmeta l4proto 58 accept",  # ipv6-icmp (numeric: hosts without /etc/protocols)
    ]
    v4, v6 = split(mgmt)
    if v4:
        lines.append('\t\tip saddr %s tcp dport %d accept comment "prov: ssh from management"' % (nft_set(v4), ssh_port))
    if v6:
        lines.append('\t\tip6 saddr %s tcp dport %d accept comment "prov: ssh from management"' % (nft_set(v6), ssh_port))
    for p in ports:
        tag = 'comment "prov: %d/%s"' % (p["port"], p["proto"])
        if not p["sources"]:
            lines.append("\t\t%s dport %d accept %s" % (p["proto"], p["port"], tag))
            continue
        v4, v6 = split(p["sources"])
        if v4:
            lines.append("\t\tip saddr %s %s dport %d accept %s" % (nft_set(v4), p["proto"], p["port"], tag))
        if v6:
            lines.append("\t\tip6 saddr %s %s dport %d accept %s" % (nft_set(v6), p["proto"], p["port"], tag))
    lines += [
        "\t}",
        "",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        "\t}",
        "",
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        "\t}",
        "}",
        "",
    ]
    return "\n".join(lines)


# ---------- reading the live ruleset back: module_utils/prov_nft.py ----------

def live(module):
    _, out, _ = run(module, ["nft", "-j", "list", "ruleset"])
    return summarize(json.loads(out or "{}"))


def accepts(rules, port, proto, sources):
    """Does some accept rule open port/proto to exactly `sources` (per family; empty = any)?"""
    want4, want6 = split(sources)
    cand = [r for r in rules if r["verdict"] == "accept" and r["proto"] == proto and port in r["ports"]
            and not r["other"]]
    if not sources:
        return any(r["saddr"] is None for r in cand)
    got4 = set().union(*([r["saddr"] for r in cand if r["family"] == "ip"] or [set()]))
    got6 = set().union(*([r["saddr"] for r in cand if r["family"] == "ip6"] or [set()]))
    return set(want4) <= got4 and set(want6) <= got6


def main():
    module = AnsibleModule(argument_spec=dict(
        mgmt_cidrs=dict(type="list", elements="str", default=[]),
        controller=dict(type="str", default=""),
        keep_controller=dict(type="bool", default=True),
        ssh_port=dict(type="int", default=22),
        ports=dict(type="list", elements="dict", default=[]),
        profile=dict(type="str", default="customer"),
        job_id=dict(type="str", default=""),
        path=dict(type="str", default="/etc/nftables.conf"),
        rollback_seconds=dict(type="int", default=120),
        enable_service=dict(type="bool", default=True),
    ))
    p = module.params
    try:
        controller = addr(p["controller"].split()[0]) if p["controller"].strip() else None
    except ValueError:
        controller = None
    try:
        mgmt = [net(c) for c in p["mgmt_cidrs"] if str(c).strip()]
    except ValueError as exc:
        module.fail_json(msg="invalid management CIDR: %s" % exc)
    if not mgmt:
        if controller is None:
            module.fail_json(msg="no management CIDRs given and the controller address is unknown "
                                 "(SSH_CLIENT empty); refusing to apply a default-deny policy")
        mgmt = [net("%s/%d" % (controller, 24 if controller.version == 4 else 64))]
    controller_added = False
    if p["keep_controller"] and controller is not None and not any(controller in n for n in mgmt):
        mgmt.append(net(str(controller)))
        controller_added = True
    mgmt = sorted(set(mgmt), key=lambda n: (n.version, int(n.network_address), n.prefixlen))

    ports = []
    for item in p["ports"]:
        try:
            port = int(item.get("port"))
        except (TypeError, ValueError):
            module.fail_json(msg="invalid port entry %r" % (item,))
        proto = str(item.get("proto") or "tcp").lower()
        if not 1 <= port <= 65535 or proto not in ("tcp", "udp"):
            module.fail_json(msg="invalid port entry %r (port 1-65535, proto tcp|udp)" % (item,))
        srcs = item.get("sources") or []
        if isinstance(srcs, str):
            srcs = [srcs]
        try:
            srcs = sorted({net(s) for s in srcs}, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
        except ValueError as exc:
            module.fail_json(msg="invalid source CIDR for port %d/%s: %s" % (port, proto, exc))
        ports.append({"port": port, "proto": proto, "sources": srcs})

    desired = render(mgmt, p["ssh_port"], ports, p["profile"], p["job_id"])
    desired_sha = hashlib.sha256(desired.encode()).hexdigest()
    try:
        with open(p["path"]) as fh:
            current = fh.read()
    except OSError:
        current = None
    state_path = os.path.join(STATE_DIR, "nftables.state.json")
    try:
        with open(state_path) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        state = {}
    _, _, live_sig = live(module)
    file_changed = current != desired
    need_apply = file_changed or state.get("file_sha") != desired_sha or state.get("live_sig") != live_sig
    changed = False
    rollback_armed = False

    if file_changed:
        tmp = p["path"] + ".prov-new"
        write_atomic(tmp, desired, 0o755)
        rc, out, err = run(module, ["nft", "-c", "-f", tmp], check=False)
        if rc != 0:
            os.unlink(tmp)
            module.fail_json(msg="generated ruleset does not validate (nft -c): %s" % err.strip(), ruleset=desired)
        os.makedirs(STATE_DIR, 0o755, exist_ok=True)
        if current is not None:
            shutil.copy2(p["path"], os.path.join(STATE_DIR, "nftables.conf.prev"))
        os.replace(tmp, p["path"])
        changed = True

    if need_apply:
        os.makedirs(STATE_DIR, 0o755, exist_ok=True)
        if p["rollback_seconds"] > 0:
            for cmd in (["systemctl", "stop", ROLLBACK_UNIT + ".timer", ROLLBACK_UNIT + ".service"],
                        ["systemctl", "reset-failed", ROLLBACK_UNIT + ".timer", ROLLBACK_UNIT + ".service"]):
                run(module, cmd, check=False)
            _, cur_rules, _ = run(module, ["nft", "list", "ruleset"])
            rb = os.path.join(STATE_DIR, "nftables.rollback.nft")
            write_atomic(rb, "flush ruleset\n" + cur_rules, 0o600)
            prev = os.path.join(STATE_DIR, "nftables.conf.prev")
            script = "nft -f %s && if [ -f %s ]; then cp %s %s; fi" % (rb, prev, prev, p["path"])
            run(module, ["systemd-run", "--quiet", "--unit=%s" % ROLLBACK_UNIT,
                         "--on-active=%ds" % p["rollback_seconds"], "--timer-property=AccuracySec=1s",
                         "/bin/sh", "-c", script])
            rollback_armed = True
        rc, out, err = run(module, ["nft", "-f", p["path"]], check=False)
        if rc != 0:
            if rollback_armed:
                run(module, ["systemctl", "stop", ROLLBACK_UNIT + ".timer"], check=False)
            module.fail_json(msg="nft -f %s failed: %s" % (p["path"], err.strip()))
        changed = True

    if p["enable_service"]:
        rc, out, _ = run(module, ["systemctl", "is-enabled", "nftables.service"], check=False)
        if out.strip() != "enabled":
            run(module, ["systemctl", "enable", "--quiet", "nftables.service"])
            changed = True

    chain, rules, live_sig = live(module)
    problems = []
    if not chain:
        problems.append("chain inet filter input missing")
    elif chain.get("policy") != "drop":
        problems.append("input policy is %s" % chain.get("policy"))
    if not accepts(rules, p["ssh_port"], "tcp", mgmt):
        problems.append("SSH rule for the management CIDRs missing")
    for item in ports:
        if not accepts(rules, item["port"], item["proto"], item["sources"]):
            problems.append("rule for %d/%s missing" % (item["port"], item["proto"]))
    if problems:
        module.fail_json(msg="live ruleset does not match: %s" % "; ".join(problems), rollback_armed=rollback_armed)
    if need_apply:
        write_atomic(state_path, json.dumps({"file_sha": desired_sha, "live_sig": live_sig}), 0o644)

    reported = open_ports(rules, p["ssh_port"], mgmt)
    module.exit_json(changed=changed, applied=need_apply, file_changed=file_changed, policy=chain.get("policy"),
                     open_ports=reported, mgmt_cidrs=[str(n) for n in mgmt], ssh_port=p["ssh_port"],
                     controller=str(controller) if controller else None, controller_added=controller_added,
                     rollback_armed=rollback_armed, rollback_unit=ROLLBACK_UNIT + ".timer", profile=p["profile"],
                     path=p["path"])


if __name__ == "__main__":
    main()
