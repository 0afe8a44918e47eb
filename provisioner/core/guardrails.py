"""Guardrail policy: every provisioning rule as pure functions over plain data.

Nothing here does I/O, reads the clock or the database. Callers pass in the request (or the host's
observed state), the `Policy` and `now`; every check returns the list of ALL violations it found,
never just the first, so a user fixes a request in one round trip instead of five.

Each `Violation` carries a stable `code` (API clients and waivers key on it), the `rule` group it
belongs to, a `message` naming the actual offending values, a `remedy` saying what to do, the
`field` it concerns and whether it is `waivable`.

Decisions
---------
* Waivers are per **code**, not per rule: waiving "backup.retention_out_of_bounds" must not also
  silence "backup.required". `rule` only groups codes for display and reporting.
* Waiver scopes are exact strings: "request:<id>", "host:<id>" or "tenant:<name>" (see `scope`).
  `apply_waivers` matches a waiver only against the scopes the caller passes; pass both the host and
  its tenant scope if tenant-wide waivers should count.
* A waiver whose `expires_at` equals `now` is already expired.
* Redundancy is fail-closed: `pools_requiring_redundancy` defaults to {"*"}, meaning every pool
  that is not a lab pool. A new production pool is protected without anyone remembering to list it;
  lab pools ("lab", "vagrant") are exempt. Name pools explicitly to narrow or widen this.
* RAID levels are ordered by *guaranteed* fault tolerance (member failures survived whichever
  members fail): 0 -> 0, 1/5/10 -> 1, 6 -> 2. `raid_min_level` applies only to pools that
  require redundancy, so it must name a redundant level.
* A firewall source counts as "the world" when it is broader than /8 (IPv4) or /16 (IPv6) and not
  inside a private range: 0.0.0.0/0 and ::/0, but also the 0.0.0.0/1 + 128.0.0.0/1 trick.
  Management ports are matched on port number for both protocols (IPMI 623 is UDP).
* Image channels: everyone gets `customer_image_channels`; roles in `lab_image_roles` (imager)
  additionally get `imager_image_channels_on_lab_pools`, but only on lab pools. Production pools
  never receive candidate images, whoever asks.
* Restore: with backups configured, the last successful restore test must be at most
  `restore_test_max_age_days` old (exactly that age still passes) and the latest test must have
  passed. At handover the restore codes become non-waivable: a host is never handed over with
  unverified restores.
* Datetimes may be naive (taken as UTC, the service's convention, see provisioner.core.timeutil) or
  timezone-aware; aware ones are converted to naive UTC before comparing.

Codes (W = waivable, - = must be fixed)
-----------------------------------------
request:  request.invalid_count -, request.invalid_role -, request.tenant_missing -
image:    image.channel_not_allowed -, image.deprecated W
raid:     raid.required W, raid.level_too_low W, raid.single_disk_in_redundant_pool W,
          raid.degraded W, raid.invalid_level -, raid.insufficient_disks -
firewall: firewall.default_deny_required -, firewall.management_port_open_to_world -,
          firewall.too_many_ports W, firewall.rules_drifted W, firewall.invalid_port -,
          firewall.invalid_protocol -, firewall.invalid_source -
backup:   backup.required W, backup.retention_out_of_bounds W, backup.schedule_invalid -,
          backup.paths_missing -, backup.path_invalid -, backup.config_drifted W
restore:  restore.missing W, restore.stale W, restore.failed - (none waivable at handover)
quota:    quota.exceeded - (ask for a quota increase instead)
lease:    lease.invalid_hours -, lease.too_long -, lease.expired -, lease.too_many_extensions -
waiver:   waiver.unknown_code -, waiver.code_not_waivable -, waiver.justification_too_short -,
          waiver.expiry_missing -, waiver.expiry_not_in_future -, waiver.expiry_too_far -,
          waiver.scope_invalid -, waiver.self_approval -, waiver.approver_not_authorized -

Non-waivable, and why: malformed input (invalid_*) has nothing to waive; world-open management
ports, default-accept firewalls and non-approved image channels are the incidents this module exists
to prevent; a failed restore means backups are known broken; quota and lease limits have their own
processes (quota increase, new request).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from provisioner.core.policy import (  # noqa: F401  (the policy is part of the guardrails' interface)
    ALL_NON_LAB_POOLS,
    KNOWN_ROLES,
    NAMED_SCHEDULES,
    RAID_FAULT_TOLERANCE,
    RAID_LEVELS,
    Policy,
    PolicyError,
)

# --------------------------------------------------------------------------------------------
# Code registry: the single source of truth for rule groups and waivability.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeInfo:
    rule: str
    waivable: bool
    summary: str


def _c(rule: str, waivable: bool, summary: str) -> CodeInfo:
    return CodeInfo(rule=rule, waivable=waivable, summary=summary)


CODES: Mapping[str, CodeInfo] = MappingProxyType({
    "request.invalid_count": _c("request", False, "host count must be at least 1"),
    "request.invalid_role": _c("request", False, "requester role is unknown"),
    "request.tenant_missing": _c("request", False, "request names no tenant"),
    "image.channel_not_allowed": _c("image", False, "image channel not allowed for this role and pool"),
    "image.deprecated": _c("image", True, "image is deprecated"),
    "raid.required": _c("raid", True, "pool requires a redundant RAID level"),
    "raid.level_too_low": _c("raid", True, "RAID level below the pool's minimum"),
    "raid.single_disk_in_redundant_pool": _c("raid", True, "too few data disks for redundancy"),
    "raid.degraded": _c("raid", True, "RAID array is degraded"),
    "raid.invalid_level": _c("raid", False, "unknown RAID level"),
    "raid.insufficient_disks": _c("raid", False, "not enough data disks for the RAID level"),
    "firewall.default_deny_required": _c("firewall", False, "inbound default policy must be deny"),
    "firewall.management_port_open_to_world": _c("firewall", False, "management port open to the world"),
    "firewall.too_many_ports": _c("firewall", True, "too many open ports"),
    "firewall.rules_drifted": _c("firewall", True, "firewall rules differ from what was applied"),
    "firewall.invalid_port": _c("firewall", False, "port outside 1-65535"),
    "firewall.invalid_protocol": _c("firewall", False, "protocol is not tcp or udp"),
    "firewall.invalid_source": _c("firewall", False, "source is not a valid CIDR network"),
    "backup.required": _c("backup", True, "backups must be enabled"),
    "backup.retention_out_of_bounds": _c("backup", True, "backup retention outside policy bounds"),
    "backup.schedule_invalid": _c("backup", False, "backup schedule not allowed"),
    "backup.paths_missing": _c("backup", False, "backups enabled without paths"),
    "backup.path_invalid": _c("backup", False, "backup path is not absolute"),
    "backup.config_drifted": _c("backup", True, "installed backup differs from the request's backup block"),
    "restore.missing": _c("restore", True, "no successful restore test recorded"),
    "restore.stale": _c("restore", True, "last successful restore test is too old"),
    "restore.failed": _c("restore", False, "latest restore test failed"),
    "quota.exceeded": _c("quota", False, "tenant quota for the pool would be exceeded"),
    "lease.invalid_hours": _c("lease", False, "lease hours must be a positive integer"),
    "lease.too_long": _c("lease", False, "lease longer than the policy allows"),
    "lease.expired": _c("lease", False, "lease already expired"),
    "lease.too_many_extensions": _c("lease", False, "lease extended too often"),
    "waiver.unknown_code": _c("waiver", False, "waiver names an unknown code"),
    "waiver.code_not_waivable": _c("waiver", False, "code cannot be waived"),
    "waiver.justification_too_short": _c("waiver", False, "justification is too thin"),
    "waiver.expiry_missing": _c("waiver", False, "waiver has no expiry"),
    "waiver.expiry_not_in_future": _c("waiver", False, "waiver expiry is not in the future"),
    "waiver.expiry_too_far": _c("waiver", False, "waiver expiry beyond the allowed maximum"),
    "waiver.scope_invalid": _c("waiver", False, "waiver scope is malformed"),
    "waiver.self_approval": _c("waiver", False, "asker approved their own waiver"),
    "waiver.approver_not_authorized": _c("waiver", False, "approver lacks an approving role"),
})

WAIVABLE_CODES: frozenset[str] = frozenset(code for code, info in CODES.items() if info.waivable)


def is_waivable(code: str) -> bool:
    return code in WAIVABLE_CODES


RAID_MIN_MEMBERS: Mapping[str, int] = MappingProxyType({"0": 2, "1": 2, "5": 3, "6": 4, "10": 4})
RAID_STATES: frozenset[str] = frozenset({"clean", "degraded", "missing"})
PROTOCOLS: frozenset[str] = frozenset({"tcp", "udp"})
DENY_POLICIES: frozenset[str] = frozenset({"drop", "reject"})
_POLICY_RULES = frozenset({"image", "raid", "firewall", "backup", "restore"})
SCOPE_KINDS: tuple[str, ...] = ("request", "host", "tenant")

_INTERVAL_RE = re.compile(r"^(?:every\s*)?(\d+)\s*([hd])$")
_SCOPE_RE = re.compile(r"^(request|host|tenant):\S+$")
# Sources broader than these prefixes, outside private space, are treated as "the world".
_WORLD_PREFIX = {4: 8, 6: 16}
_PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
    "169.254.0.0/16", "fc00::/7", "fe80::/10", "::1/128",
))


# --------------------------------------------------------------------------------------------
# Plain data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    code: str
    rule: str
    message: str
    remedy: str
    field: str | None = None
    waivable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "rule": self.rule, "message": self.message, "remedy": self.remedy,
                "field": self.field, "waivable": self.waivable}


def _set_attr(obj: object, name: str, value: Any) -> None:
    # Frozen dataclasses normalise their own inputs once, in __post_init__.
    object.__setattr__(obj, name, value)


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `true` for a day count is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ImageRef:
    name: str
    channel: str
    deprecated: bool = False


@dataclass(frozen=True)
class PortRule:
    port: int
    proto: str
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        _set_attr(self, "sources", tuple(self.sources))

    def label(self) -> str:
        return f"{self.port}/{self.proto}"


@dataclass(frozen=True)
class BackupSpec:
    enabled: bool
    paths: tuple[str, ...] = ()
    retention_days: int = 30
    schedule: str = "daily"

    def __post_init__(self) -> None:
        _set_attr(self, "paths", tuple(self.paths))


@dataclass(frozen=True)
class RequestSpec:
    """A host request as submitted. Not validated on construction: checks report problems instead.

    `raid_level=None` means "the pool's default" (its minimum level in redundant pools, none in lab
    pools); `data_disks=None` means the hardware is not known yet, so disk-count rules are skipped.
    """

    tenant: str
    requester_role: str
    pool: str
    image: ImageRef
    backup: BackupSpec
    count: int = 1
    raid_level: str | None = None
    data_disks: int | None = None
    open_ports: tuple[PortRule, ...] = ()
    lease_hours: int | None = None

    def __post_init__(self) -> None:
        _set_attr(self, "open_ports", tuple(self.open_ports))


@dataclass(frozen=True)
class RaidState:
    level: str | None
    state: str  # "clean" | "degraded" | "missing"
    members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set_attr(self, "members", tuple(self.members))
        # Observed state comes from our own agent; an unknown value is a bug, not a user error.
        if self.state not in RAID_STATES:
            raise ValueError(f"RaidState.state must be one of {sorted(RAID_STATES)}, got {self.state!r}")


@dataclass(frozen=True)
class FirewallState:
    default_policy_input: str  # "drop" | "reject" | "accept"
    open_ports: tuple[PortRule, ...] = ()
    # What the provisioner last applied; None = unknown, so drift is not checked.
    expected_open_ports: tuple[PortRule, ...] | None = None

    def __post_init__(self) -> None:
        _set_attr(self, "open_ports", tuple(self.open_ports))
        if self.expected_open_ports is not None:
            _set_attr(self, "expected_open_ports", tuple(self.expected_open_ports))


@dataclass(frozen=True)
class HostFacts:
    """A host's observed state for continuous compliance. `last_restore_passed=None` = never tested."""

    data_disk_count: int
    raid: RaidState
    firewall: FirewallState
    last_restore_ok_at: datetime | None
    last_restore_passed: bool | None
    backup_configured: bool
    now: datetime
    # How the installed backup differs from the request's block (core.backup_plan.drift); () = as asked.
    backup_drift: tuple[str, ...] = ()


@dataclass(frozen=True)
class Waiver:
    code: str
    scope: str  # "request:<id>" | "host:<id>" | "tenant:<name>"
    approved: bool
    expires_at: datetime
    justification: str = ""
    requested_by: str = ""
    approved_by: str | None = None


@dataclass(frozen=True)
class Actor:
    name: str
    role: str


def scope(kind: str, ident: str | int) -> str:
    """Canonical waiver scope string, so callers never hand-format (and mistype) one."""
    if kind not in SCOPE_KINDS:
        raise ValueError(f"scope kind must be one of {SCOPE_KINDS}, got {kind!r}")
    return f"{kind}:{ident}"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _waiver_hint(code: str) -> str:
    return (f" Or ask for a waiver of {code} with `provisioner waivers request --code {code} "
            f"--scope <tenant:NAME|host:ID|request:ID> --justification \"<why>\"` (an approver sets the expiry).")


def _v(code: str, message: str, remedy: str, field: str | None = None, *,
       waivable: bool | None = None) -> Violation:
    info = CODES[code]
    # A context may make a waivable code non-waivable (handover), never the other way round.
    can_waive = info.waivable if waivable is None else (waivable and info.waivable)
    if can_waive:
        remedy += _waiver_hint(code)
    elif info.rule in _POLICY_RULES:
        # Say so for policy rules, where a user would otherwise go looking for a waiver; input and
        # process errors (request, waiver, lease, quota) have nothing one could waive.
        remedy += " This cannot be waived."
    return Violation(code=code, rule=info.rule, message=message, remedy=remedy, field=field,
                     waivable=can_waive)


def _utc(dt: datetime) -> datetime:
    # The service stores naive UTC; accept aware datetimes too instead of a TypeError on compare.
    return dt if dt.tzinfo is None else dt.astimezone(UTC).replace(tzinfo=None)


def _fmt_age(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} hours" if days else f"{hours} hours"


def _fmt_dt(dt: datetime) -> str:
    return _utc(dt).isoformat(timespec="seconds") + "Z"


def _is_world(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    if net.prefixlen >= _WORLD_PREFIX[net.version]:
        return False
    # Same-version comparisons only, spelled as isinstance so each subnet_of call is typed.
    if isinstance(net, ipaddress.IPv4Network):
        return not any(isinstance(p, ipaddress.IPv4Network) and net.subnet_of(p) for p in _PRIVATE_NETS)
    return not any(isinstance(p, ipaddress.IPv6Network) and net.subnet_of(p) for p in _PRIVATE_NETS)


def _parse_source(source: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network | None, str]:
    """Return (network, "") or (None, reason). Host bits set is an error: "10.0.0.5/8" is a typo."""
    if not isinstance(source, str):
        return None, f"{source!r} is not a string"
    try:
        return ipaddress.ip_network(source, strict=True), ""
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(source, strict=False)
    except ValueError:
        return None, f"{source!r} is not an IPv4/IPv6 network in CIDR notation"
    return None, f"{source!r} has host bits set; did you mean {loose}?"


def allowed_channels(role: str, pool: str, policy: Policy) -> frozenset[str]:
    """The image channels ``role`` may deploy on ``pool``."""
    if role in policy.lab_image_roles and pool in policy.lab_pools:
        return policy.customer_image_channels | policy.imager_image_channels_on_lab_pools
    return policy.customer_image_channels


def interval_hours(text: str) -> int | None:
    """Hours of an interval schedule ("6h", "every 2d"), or None when the text is not one."""
    match = _INTERVAL_RE.match(text.strip().lower())
    if not match:
        return None
    return int(match.group(1)) * (24 if match.group(2) == "d" else 1)


def _schedule_hours(schedule: str, policy: Policy) -> tuple[int | None, str]:
    """Interval in hours, or (None, reason)."""
    text = schedule.strip().lower() if isinstance(schedule, str) else ""
    if text in NAMED_SCHEDULES:
        if text not in policy.backup_schedules_allowed:
            return None, (f"schedule {schedule!r} is not allowed; allowed: "
                          f"{sorted(policy.backup_schedules_allowed)}")
        return NAMED_SCHEDULES[text], ""
    hours = interval_hours(text)
    if hours is None:
        return None, (f"schedule {schedule!r} is neither one of {sorted(policy.backup_schedules_allowed)} "
                      f"nor an interval like '6h' or 'every 2d'")
    if not policy.backup_interval_min_hours <= hours <= policy.backup_interval_max_hours:
        return None, (f"schedule {schedule!r} is every {hours}h; the interval must be between "
                      f"{policy.backup_interval_min_hours}h and {policy.backup_interval_max_hours}h")
    return hours, ""


# --------------------------------------------------------------------------------------------
# Rule groups (shared by request and host checks)
# --------------------------------------------------------------------------------------------


def check_open_ports(rules: Sequence[PortRule], policy: Policy, field_prefix: str = "open_ports",
                     ) -> list[Violation]:
    """Per-rule validity, world-open management ports and the open-port count."""
    out: list[Violation] = []
    for i, rule in enumerate(rules):
        where = f"{field_prefix}[{i}]"
        port_ok = _is_int(rule.port) and 1 <= rule.port <= 65535
        if not port_ok:
            out.append(_v("firewall.invalid_port", f"port {rule.port!r} in {where} is outside 1-65535",
                          "Use a port number between 1 and 65535.", f"{where}.port"))
        if rule.proto not in PROTOCOLS:
            out.append(_v("firewall.invalid_protocol",
                          f"protocol {rule.proto!r} for port {rule.port!r} is not one of tcp, udp",
                          "Set proto to \"tcp\" or \"udp\"; add one rule per protocol.", f"{where}.proto"))
        if not rule.sources:
            out.append(_v("firewall.invalid_source", f"port {rule.label()} has no sources",
                          "List the source networks explicitly (e.g. 10.0.0.0/8); an empty list is "
                          "ambiguous.", f"{where}.sources"))
        world: list[str] = []
        for j, source in enumerate(rule.sources):
            net, reason = _parse_source(source)
            if net is None:
                out.append(_v("firewall.invalid_source", f"source {reason} (port {rule.label()})",
                              "Use CIDR notation with the network address, e.g. 203.0.113.0/24 or "
                              "2001:db8::/32.", f"{where}.sources[{j}]"))
            elif _is_world(net):
                world.append(str(net))
        if port_ok and rule.port in policy.management_ports and world:
            out.append(_v("firewall.management_port_open_to_world",
                          f"management port {rule.label()} is open to {', '.join(world)}",
                          f"Restrict port {rule.port} to your admin networks (e.g. your office /32 or the "
                          "VPN range) or reach the host through the bastion.", f"{where}.sources"))
    distinct = {(r.port, r.proto) for r in rules}
    if len(distinct) > policy.max_open_ports:
        out.append(_v("firewall.too_many_ports",
                      f"{len(distinct)} distinct ports are open; the policy allows at most "
                      f"{policy.max_open_ports}",
                      f"Close {len(distinct) - policy.max_open_ports} port(s) or put services behind a "
                      "load balancer or reverse proxy.", field_prefix))
    return out


def _rule_key(rule: PortRule) -> tuple[Any, str, frozenset[str]]:
    # Compare normalised networks so "10.0.0.0/8" and "10.0.0.0/08" or reordered sources don't drift.
    sources = frozenset(str(net) if (net := _parse_source(s)[0]) is not None else str(s)
                        for s in rule.sources)
    return rule.port, rule.proto, sources


def _describe(keys: Iterable[tuple[Any, str, frozenset[str]]]) -> str:
    return "; ".join(f"{port}/{proto} from {', '.join(sorted(src)) or '(none)'}"
                     for port, proto, src in sorted(keys, key=lambda k: (str(k[0]), k[1], sorted(k[2]))))


def _raid_level_violations(level: str, pool: str, policy: Policy, field_name: str) -> list[Violation]:
    """Redundancy requirements for a known-valid level in a pool that requires redundancy."""
    minimum = policy.min_raid_level(pool)
    if RAID_FAULT_TOLERANCE[level] == 0:
        return [_v("raid.required", f"pool {pool!r} requires a redundant RAID level, got RAID {level}",
                   f"Use RAID {minimum} or better (any of "
                   f"{_levels_at_least(minimum)}).", field_name)]
    if RAID_FAULT_TOLERANCE[level] < RAID_FAULT_TOLERANCE[minimum]:
        return [_v("raid.level_too_low",
                   f"RAID {level} survives {RAID_FAULT_TOLERANCE[level]} disk failure(s); pool {pool!r} "
                   f"requires at least RAID {minimum} ({RAID_FAULT_TOLERANCE[minimum]})",
                   f"Use one of {_levels_at_least(minimum)}.", field_name)]
    return []


def _levels_at_least(minimum: str) -> str:
    return ", ".join(f"RAID {lvl}" for lvl in RAID_LEVELS
                     if RAID_FAULT_TOLERANCE[lvl] >= RAID_FAULT_TOLERANCE[minimum])


def _single_disk(disks: int, pool: str, policy: Policy, field_name: str) -> Violation:
    return _v("raid.single_disk_in_redundant_pool",
              f"{disks} data disk(s) in pool {pool!r}, which requires redundancy and at least "
              f"{policy.raid_required_min_data_disks}",
              f"Choose hardware with at least {policy.raid_required_min_data_disks} data disks, or request "
              f"a lab pool ({', '.join(sorted(policy.lab_pools))}) for throwaway hosts.", field_name)


def _restore_violations(state: HostFacts, policy: Policy, *, handover: bool) -> list[Violation]:
    if not state.backup_configured:
        return []  # nothing to restore; backup.required covers the policy side
    waivable = None if not handover else False
    gate = " Handover is blocked until a restore test passes." if handover else ""
    max_age = timedelta(days=policy.restore_test_max_age_days)
    if state.last_restore_ok_at is None:
        tried = " (the latest attempt failed)" if state.last_restore_passed is False else ""
        return [_v("restore.missing", f"no successful restore test is recorded for this host{tried}",
                   "Run a restore test (`provisioner hosts compliance-check <host-id>`) and fix any failure." + gate,
                   "last_restore_ok_at", waivable=waivable)]
    out: list[Violation] = []
    if state.last_restore_passed is False:
        out.append(_v("restore.failed",
                      f"the latest restore test failed; last success was {_fmt_dt(state.last_restore_ok_at)}",
                      "Fix the backup (check the job log of the failed restore test), then rerun the "
                      "restore test." + gate, "last_restore_passed", waivable=waivable))
    age = _utc(state.now) - _utc(state.last_restore_ok_at)
    if age > max_age:
        out.append(_v("restore.stale",
                      f"last successful restore test was {_fmt_age(age)} ago "
                      f"({_fmt_dt(state.last_restore_ok_at)}); the policy allows at most "
                      f"{policy.restore_test_max_age_days} days",
                      "Run a restore test now and schedule one at least every "
                      f"{policy.restore_test_max_age_days} days." + gate,
                      "last_restore_ok_at", waivable=waivable))
    return out


def _lease_hours_violations(hours: Any, policy: Policy, field_name: str) -> list[Violation]:
    if not _is_int(hours) or hours < 1:
        return [_v("lease.invalid_hours", f"lease of {hours!r} hours is not a positive whole number",
                   f"Request between 1 and {policy.max_lease_hours} hours.", field_name)]
    if hours > policy.max_lease_hours:
        return [_v("lease.too_long",
                   f"lease of {hours} hours exceeds the maximum of {policy.max_lease_hours}",
                   f"Request at most {policy.max_lease_hours} hours and extend later if needed.", field_name)]
    return []


# --------------------------------------------------------------------------------------------
# Public checks
# --------------------------------------------------------------------------------------------


def check_request(spec: RequestSpec, policy: Policy) -> list[Violation]:
    """Every violation of a host request, in a stable order (request, image, raid, firewall, backup,
    lease). Quota is separate (`check_quota`) because it needs the tenant's current usage."""
    out: list[Violation] = []
    if not spec.tenant or not spec.tenant.strip():
        out.append(_v("request.tenant_missing", "the request names no tenant",
                      "Set tenant to the tenant the hosts are for.", "tenant"))
    if spec.requester_role not in KNOWN_ROLES:
        out.append(_v("request.invalid_role", f"requester role {spec.requester_role!r} is unknown",
                      f"Use one of {sorted(KNOWN_ROLES)}.", "requester_role"))
    if not _is_int(spec.count) or spec.count < 1:
        out.append(_v("request.invalid_count", f"count is {spec.count!r}; at least 1 host must be requested",
                      "Set count to 1 or more.", "count"))

    allowed = allowed_channels(spec.requester_role, spec.pool, policy)
    if spec.image.channel not in allowed:
        hint = ""
        lab_allowed = policy.customer_image_channels | policy.imager_image_channels_on_lab_pools
        if spec.image.channel in lab_allowed and spec.pool not in policy.lab_pools:
            hint = f" Channel {spec.image.channel!r} is only available on lab pools."
        out.append(_v("image.channel_not_allowed",
                      f"role {spec.requester_role!r} may not deploy image {spec.image.name!r} from channel "
                      f"{spec.image.channel!r} on pool {spec.pool!r}; allowed: {sorted(allowed)}",
                      f"Pick an image from {sorted(allowed)}.{hint}", "image.channel"))
    if spec.image.deprecated:
        out.append(_v("image.deprecated", f"image {spec.image.name!r} is deprecated",
                      "Pick its successor from `provisioner images list`.", "image.name"))

    out.extend(_check_request_raid(spec, policy))
    out.extend(check_open_ports(spec.open_ports, policy))
    out.extend(_check_request_backup(spec.backup, policy))
    if spec.lease_hours is not None:
        out.extend(_lease_hours_violations(spec.lease_hours, policy, "lease_hours"))
    return out


def _check_request_raid(spec: RequestSpec, policy: Policy) -> list[Violation]:
    out: list[Violation] = []
    level = spec.raid_level
    if level is not None and level not in RAID_LEVELS:
        out.append(_v("raid.invalid_level", f"RAID level {level!r} is not one of {list(RAID_LEVELS)}",
                      f"Use one of {list(RAID_LEVELS)} or omit raid_level for the pool default.",
                      "raid_level"))
        level_ok = False
    else:
        level_ok = True
    redundant = policy.requires_redundancy(spec.pool)
    single_disk = False
    if redundant:
        if spec.data_disks is not None and spec.data_disks < policy.raid_required_min_data_disks:
            out.append(_single_disk(spec.data_disks, spec.pool, policy, "data_disks"))
            single_disk = True
        if level is not None and level_ok:
            out.extend(_raid_level_violations(level, spec.pool, policy, "raid_level"))
    effective = level if level is not None else (policy.min_raid_level(spec.pool) if redundant else None)
    # The single-disk violation already says "not enough disks"; don't say it twice.
    if (level_ok and effective is not None and spec.data_disks is not None and not single_disk
            and spec.data_disks < RAID_MIN_MEMBERS[effective]):
        out.append(_v("raid.insufficient_disks",
                      f"RAID {effective} needs at least {RAID_MIN_MEMBERS[effective]} data disks, "
                      f"the host has {spec.data_disks}",
                      f"Choose hardware with at least {RAID_MIN_MEMBERS[effective]} data disks or a RAID "
                      "level that fits the disks.", "data_disks"))
    return out


def _check_request_backup(backup: BackupSpec, policy: Policy) -> list[Violation]:
    if not backup.enabled:
        if not policy.backup_required:
            return []
        return [_v("backup.required", "backups are disabled but the policy requires them",
                   "Enable backups with the paths that hold your data.", "backup.enabled")]
    out: list[Violation] = []
    if not backup.paths:
        out.append(_v("backup.paths_missing", "backups are enabled but no paths are listed",
                      "List the absolute paths to back up, e.g. [\"/srv\", \"/var/lib/postgresql\"].",
                      "backup.paths"))
    for i, path in enumerate(backup.paths):
        if not isinstance(path, str) or not path.startswith("/"):
            out.append(_v("backup.path_invalid", f"backup path {path!r} is not absolute",
                          "Use absolute paths starting with '/'.", f"backup.paths[{i}]"))
    low, high = policy.backup_retention_days_min, policy.backup_retention_days_max
    if not _is_int(backup.retention_days) or not low <= backup.retention_days <= high:
        out.append(_v("backup.retention_out_of_bounds",
                      f"retention of {backup.retention_days!r} days is outside {low}..{high} days",
                      f"Set retention_days between {low} and {high}.", "backup.retention_days"))
    _, reason = _schedule_hours(backup.schedule, policy)
    if reason:
        out.append(_v("backup.schedule_invalid", reason,
                      f"Use one of {sorted(policy.backup_schedules_allowed)} or an interval between "
                      f"{policy.backup_interval_min_hours}h and {policy.backup_interval_max_hours}h.",
                      "backup.schedule"))
    return out


def check_host(state: HostFacts, policy: Policy, pool: str) -> list[Violation]:
    """Continuous compliance of a running host: raid, firewall, backup, restore."""
    return _check_host(state, policy, pool, handover=False)


def check_handover(state: HostFacts, policy: Policy, pool: str) -> list[Violation]:
    """Like check_host, but restore violations are never waivable: no handover with unverified restores."""
    return _check_host(state, policy, pool, handover=True)


def _check_host(state: HostFacts, policy: Policy, pool: str, *, handover: bool) -> list[Violation]:
    out: list[Violation] = []
    raid = state.raid
    if raid.level is not None and raid.level not in RAID_LEVELS:
        out.append(_v("raid.invalid_level", f"host reports unknown RAID level {raid.level!r}",
                      "Check the array with `mdadm --detail` and re-commission the host.", "raid.level"))
    if policy.requires_redundancy(pool):
        if state.data_disk_count < policy.raid_required_min_data_disks:
            out.append(_single_disk(state.data_disk_count, pool, policy, "data_disk_count"))
        if raid.state == "missing" or raid.level is None:
            out.append(_v("raid.required", f"pool {pool!r} requires RAID but the host has no array",
                          f"Re-commission the host with RAID {policy.min_raid_level(pool)} or better.",
                          "raid.state"))
        elif raid.level in RAID_LEVELS:
            out.extend(_raid_level_violations(raid.level, pool, policy, "raid.level"))
    if raid.state == "degraded":
        members = ", ".join(raid.members) or "unknown"
        out.append(_v("raid.degraded", f"RAID {raid.level or '?'} array is degraded (members present: {members})",
                      "Replace the failed disk and let the array resync; check `mdadm --detail`.",
                      "raid.state"))

    fw = state.firewall
    if policy.firewall_default_deny_required and fw.default_policy_input.lower() not in DENY_POLICIES:
        out.append(_v("firewall.default_deny_required",
                      f"inbound default policy is {fw.default_policy_input!r}; it must be drop or reject",
                      "Restore the applied ruleset (`nft -f /etc/nftables.conf` on the host) and find out who "
                      "changed it.",
                      "firewall.default_policy_input"))
    out.extend(check_open_ports(fw.open_ports, policy, "firewall.open_ports"))
    if fw.expected_open_ports is not None:
        actual = {_rule_key(r) for r in fw.open_ports}
        expected = {_rule_key(r) for r in fw.expected_open_ports}
        if actual != expected:
            parts = []
            if actual - expected:
                parts.append(f"unexpected: {_describe(actual - expected)}")
            if expected - actual:
                parts.append(f"missing: {_describe(expected - actual)}")
            out.append(_v("firewall.rules_drifted",
                          "firewall differs from what was applied; " + "; ".join(parts),
                          "Restore the applied ruleset (`nft -f /etc/nftables.conf` on the host), or change the "
                          "request's rules if the manual change should stay.", "firewall.open_ports"))

    if policy.backup_required and not state.backup_configured:
        out.append(_v("backup.required", "backups are not configured on this host",
                      "Release the host and request it again with backups enabled.", "backup_configured"))
    if state.backup_configured and state.backup_drift:
        out.append(_v("backup.config_drifted", "installed backup differs from the request: "
                      + "; ".join(state.backup_drift),
                      "Re-run the backup phase (`provisioner hosts compliance-check <host-id>` shows the "
                      "difference) and find out who changed the host's backup configuration.", "backup"))
    out.extend(_restore_violations(state, policy, handover=handover))
    return out


def check_quota(tenant_quota: Mapping[str, int], current_in_use: Mapping[str, int], pool: str, count: int,
                *, tenant: str | None = None) -> list[Violation]:
    """Would `count` more hosts in `pool` exceed the tenant's quota? A pool missing from the quota = 0.

    Negative numbers are corrupt data, not user input, so they raise ValueError.
    """
    limit = tenant_quota.get(pool, 0)
    in_use = current_in_use.get(pool, 0)
    for name, value in (("count", count), ("quota", limit), ("in_use", in_use)):
        if not _is_int(value) or value < 0:
            raise ValueError(f"check_quota: {name} must be a non-negative integer, got {value!r}")
    if in_use + count <= limit:
        return []
    who = f"tenant {tenant!r}" if tenant else "the tenant"
    if pool not in tenant_quota:
        message = f"{who} has no quota for pool {pool!r} (requested {count})"
    else:
        message = (f"{who} uses {in_use} of {limit} hosts in pool {pool!r}; {count} more would make "
                   f"{in_use + count}")
    free = max(limit - in_use, 0)
    fewer = f"Request at most {free} host(s), release" if free else "Release"
    remedy = (f"{fewer} hosts you no longer need, or ask an admin to raise the quota for pool {pool!r} "
              f"to at least {in_use + count}.")
    return [_v("quota.exceeded", message, remedy, "count")]


def lease_expiry(requested_hours: int | None, now: datetime, policy: Policy,
                 ) -> tuple[datetime | None, list[Violation]]:
    """(expires_at, violations). No requested hours = policy default; a None default = no expiry."""
    hours = policy.default_lease_hours if requested_hours is None else requested_hours
    if hours is None:
        return None, []
    problems = _lease_hours_violations(hours, policy, "lease_hours")
    if problems:
        return None, problems
    return _utc(now) + timedelta(hours=hours), []


def can_extend(expires_at: datetime, extra_hours: int, extensions_used: int, now: datetime, policy: Policy,
               ) -> list[Violation]:
    """Violations blocking a lease extension; empty = allowed, new expiry is expires_at + extra_hours.

    The lease may never reach further than `max_lease_hours` from now, so extending repeatedly can't
    turn a lab lease into a permanent host.
    """
    out: list[Violation] = []
    expires, now_utc = _utc(expires_at), _utc(now)
    if now_utc >= expires:
        out.append(_v("lease.expired", f"lease expired at {_fmt_dt(expires)}",
                      "Request a new host; expired hosts are being reclaimed.", "lease_expires_at"))
    if extensions_used >= policy.max_lease_extensions:
        out.append(_v("lease.too_many_extensions",
                      f"lease already extended {extensions_used} times; the maximum is "
                      f"{policy.max_lease_extensions}",
                      "Request a new host (or a non-lab pool for long-lived hosts).", "extensions"))
    if not _is_int(extra_hours) or extra_hours < 1:
        out.append(_v("lease.invalid_hours",
                      f"extension of {extra_hours!r} hours is not a positive whole number",
                      "Extend by at least 1 hour.", "extra_hours"))
    else:
        reach = expires + timedelta(hours=extra_hours) - now_utc
        if reach > timedelta(hours=policy.max_lease_hours):
            headroom = now_utc + timedelta(hours=policy.max_lease_hours) - expires
            allowed = int(headroom.total_seconds() // 3600)
            out.append(_v("lease.too_long",
                          f"extending by {extra_hours}h would end the lease {_fmt_age(reach)} from now; "
                          "at most "
                          f"{policy.max_lease_hours} hours ahead are allowed",
                          f"Extend by at most {max(allowed, 0)} hours.", "extra_hours"))
    return out


# --------------------------------------------------------------------------------------------
# Waivers
# --------------------------------------------------------------------------------------------


def waiver_applies(waiver: Waiver, violation: Violation, now: datetime, scopes: Iterable[str]) -> bool:
    return (violation.waivable and waiver.approved and waiver.code == violation.code
            and waiver.scope in set(scopes) and _utc(waiver.expires_at) > _utc(now))


def apply_waivers(violations: Sequence[Violation], waivers: Iterable[Waiver], now: datetime,
                  scope: str | Iterable[str]) -> tuple[list[Violation], list[Violation]]:
    """Split into (remaining, waived). Only approved, unexpired waivers for exactly the violation's code
    and one of the given scopes count; non-waivable violations always remain."""
    scopes = {scope} if isinstance(scope, str) else set(scope)
    waiver_list = list(waivers)
    remaining: list[Violation] = []
    waived: list[Violation] = []
    for violation in violations:
        if any(waiver_applies(w, violation, now, scopes) for w in waiver_list):
            waived.append(violation)
        else:
            remaining.append(violation)
    return remaining, waived


def validate_waiver_request(*, code: str, justification: str, expires_at: datetime | None, now: datetime,
                            asker: Actor, policy: Policy, approver: Actor | None = None,
                            scope: str | None = None) -> list[Violation]:
    """Problems with a waiver request (approver=None) or approval (approver given); empty = OK."""
    out: list[Violation] = []
    if code not in CODES:
        out.append(_v("waiver.unknown_code", f"{code!r} is not a guardrail code",
                      f"Copy the code from the violation; waivable codes: {sorted(WAIVABLE_CODES)}.", "code"))
    elif not CODES[code].waivable:
        out.append(_v("waiver.code_not_waivable", f"{code!r} cannot be waived",
                      "Fix the underlying problem; the violation's remedy says how.", "code"))
    if scope is not None and not _SCOPE_RE.match(scope):
        out.append(_v("waiver.scope_invalid",
                      f"scope {scope!r} is not request:<id>, host:<id> or tenant:<name>",
                      "Use e.g. host:42; prefer the narrowest scope that covers the need.", "scope"))
    text = (justification or "").strip()
    words = {w.lower() for w in re.findall(r"\w+", text)}
    # Length alone lets "aaaaaaaaaaaaaaaaaaaaaaa" through; three distinct words forces a sentence.
    if len(text) < policy.waiver_min_justification_chars or len(words) < 3:
        out.append(_v("waiver.justification_too_short",
                      f"justification {text!r} is {len(text)} characters / {len(words)} distinct words; "
                      f"at least {policy.waiver_min_justification_chars} characters and 3 words are required",
                      "Explain why the rule can't be met now, what mitigates the risk and when it will be "
                      "fixed.", "justification"))
    if expires_at is None:
        out.append(_v("waiver.expiry_missing", "the waiver has no expiry",
                      f"Set expires_at at most {policy.waiver_max_days} days from now.", "expires_at"))
    else:
        expires, now_utc = _utc(expires_at), _utc(now)
        latest = now_utc + timedelta(days=policy.waiver_max_days)
        if expires <= now_utc:
            out.append(_v("waiver.expiry_not_in_future",
                          f"expiry {_fmt_dt(expires)} is not after now ({_fmt_dt(now_utc)})",
                          f"Set expires_at in the future, at most {policy.waiver_max_days} days ahead.",
                          "expires_at"))
        elif expires > latest:
            out.append(_v("waiver.expiry_too_far",
                          f"expiry {_fmt_dt(expires)} is {_fmt_age(expires - now_utc)} ahead; the maximum is "
                          f"{policy.waiver_max_days} days ({_fmt_dt(latest)})",
                          f"Set expires_at on or before {_fmt_dt(latest)} and renew the waiver if still "
                          "needed.",
                          "expires_at"))
    if approver is not None:
        if approver.name.strip().casefold() == asker.name.strip().casefold():
            out.append(_v("waiver.self_approval",
                          f"{approver.name!r} asked for this waiver and cannot approve it",
                          "Have another operator or admin approve it.", "approver"))
        if approver.role not in policy.waiver_approver_roles:
            out.append(_v("waiver.approver_not_authorized",
                          f"approver {approver.name!r} has role {approver.role!r}; approving needs one of "
                          f"{sorted(policy.waiver_approver_roles)}",
                          f"Ask someone with role {' or '.join(sorted(policy.waiver_approver_roles))}.",
                          "approver"))
    return out
