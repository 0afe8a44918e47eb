"""Table-driven tests for provisioner.core.guardrails: every rule, every boundary."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from provisioner.core import guardrails as g
from provisioner.core.guardrails import (
    Actor,
    BackupSpec,
    FirewallState,
    HostFacts,
    ImageRef,
    Policy,
    PolicyError,
    PortRule,
    RaidState,
    RequestSpec,
    Violation,
    Waiver,
)

NOW = datetime(2025, 1, 15, 12, 0, 0)  # naive UTC, the service's convention
P = Policy()


def codes(violations: list[Violation]) -> list[str]:
    return [v.code for v in violations]


def rule(port: Any, *sources: str, proto: str = "tcp") -> PortRule:
    return PortRule(port=port, proto=proto, sources=tuple(sources))


BASE_REQUEST = RequestSpec(
    tenant="acme",
    requester_role="customer",
    pool="default",
    image=ImageRef("ubuntu-24.04", "stable"),
    backup=BackupSpec(enabled=True, paths=("/srv",), retention_days=30, schedule="daily"),
    count=1,
    raid_level=None,
    data_disks=2,
    open_ports=(rule(443, "0.0.0.0/0"), rule(22, "10.0.0.0/8")),
)

BASE_HOST = HostFacts(
    data_disk_count=2,
    raid=RaidState("1", "clean", ("sda", "sdb")),
    firewall=FirewallState("drop", (rule(443, "0.0.0.0/0"), rule(22, "10.0.0.0/8"))),
    last_restore_ok_at=NOW - timedelta(days=1),
    last_restore_passed=True,
    backup_configured=True,
    now=NOW,
)


def req(**changes: Any) -> RequestSpec:
    return replace(BASE_REQUEST, **changes)


def host(**changes: Any) -> HostFacts:
    return replace(BASE_HOST, **changes)


# ---------------------------------------------------------------------------- registry & shape


def test_docstring_documents_every_code_with_its_waivability() -> None:
    doc = g.__doc__ or ""
    for code, info in g.CODES.items():
        match = re.search(rf"{re.escape(code)} ([W-])", doc)
        assert match, f"{code} not documented"
        assert (match.group(1) == "W") == info.waivable, code
        assert code.split(".")[0] == info.rule


# The policy's promise, written out: only these may be waived. A code that becomes waivable (or
# stops being) must change this list on purpose. Never waivable: anything that exposes the
# management port, breaks default-deny, a failed restore, quotas, channels and waiver rules.
EXPECTED_WAIVABLE = {
    "backup.config_drifted", "backup.required", "backup.retention_out_of_bounds", "firewall.rules_drifted",
    "firewall.too_many_ports",
    "image.deprecated", "raid.degraded", "raid.level_too_low", "raid.required",
    "raid.single_disk_in_redundant_pool", "restore.missing", "restore.stale",
}


def test_waivable_codes_match_registry() -> None:
    assert g.WAIVABLE_CODES == EXPECTED_WAIVABLE
    assert {c for c, i in g.CODES.items() if i.waivable} == EXPECTED_WAIVABLE
    assert g.is_waivable("raid.degraded")
    assert not g.is_waivable("firewall.management_port_open_to_world")
    assert not g.is_waivable("image.channel_not_allowed")
    assert not g.is_waivable("no.such.code")


def _every_violation() -> list[Violation]:
    """A pile of requests and hosts that, together, trip a large share of the codes."""
    bad_request = req(
        tenant="", requester_role="intern", count=0, image=ImageRef("old", "nightly", deprecated=True),
        raid_level="0", data_disks=1, lease_hours=9999,
        open_ports=(rule(22, "0.0.0.0/0"), rule(0, "x"), rule(80, proto="icmp")),
        backup=BackupSpec(True, ("srv",), 1, "monthly"),
    )
    bad_host = host(
        data_disk_count=1, raid=RaidState("0", "degraded", ("sda",)),
        firewall=FirewallState("accept", (rule(22, "::/0"),), expected_open_ports=()),
        last_restore_passed=False, last_restore_ok_at=NOW - timedelta(days=30),
    )
    return [*g.check_request(bad_request, P), *g.check_host(bad_host, P, "default"),
            *g.check_handover(bad_host, P, "default"),
            *g.check_quota({}, {}, "default", 1),
            *g.can_extend(NOW, 0, 9, NOW, P),
            *g.validate_waiver_request(code="nope", justification="", expires_at=None, now=NOW,
                                       asker=Actor("a", "customer"), approver=Actor("A", "customer"),
                                       policy=P, scope="x"),
            # Second pile for the codes the first one shadows.
            *g.check_request(req(backup=BackupSpec(False), raid_level="7"), P),
            *g.check_request(req(raid_level="5", data_disks=2, open_ports=_ports(17),
                                 backup=BackupSpec(True, ())), P),
            *g.check_request(req(pool="db", raid_level="1", data_disks=4), DB_POLICY),
            *g.check_host(host(last_restore_ok_at=None), P, "default"),
            *g.check_host(host(backup_drift=("retention is 7 days, the request asked for 14",)), P, "default"),
            *g.validate_waiver_request(code=MGMT, justification="", expires_at=NOW, now=NOW,
                                       asker=ASKER, policy=P),
            *g.validate_waiver_request(code=MGMT, justification="", expires_at=NOW + 99 * DAY,
                                       now=NOW, asker=ASKER, policy=P)]


def test_every_violation_is_well_formed() -> None:
    violations = _every_violation()
    assert set(codes(violations)) == set(g.CODES)  # every code is reachable
    for v in violations:
        info = g.CODES[v.code]
        assert v.rule == info.rule
        assert v.message and v.remedy
        if v.waivable:
            assert info.waivable
            assert f"waiver of {v.code} with `provisioner waivers request --code {v.code}" in v.remedy
        else:
            assert "provisioner waivers request" not in v.remedy
            assert ("cannot be waived" in v.remedy) == (v.rule in {"image", "raid", "firewall", "backup",
                                                                    "restore"})
        assert set(v.to_dict()) == {"code", "rule", "message", "remedy", "field", "waivable"}


def test_baseline_request_and_host_are_clean() -> None:
    assert g.check_request(BASE_REQUEST, P) == []
    assert g.check_host(BASE_HOST, P, "default") == []
    assert g.check_handover(BASE_HOST, P, "default") == []


def test_all_violations_reported_not_just_first() -> None:
    found = codes(g.check_request(req(tenant="", count=0, raid_level="0",
                                      backup=BackupSpec(False)), P))
    assert found == ["request.tenant_missing", "request.invalid_count", "raid.required", "backup.required"]


# ---------------------------------------------------------------------------- policy


def test_policy_defaults() -> None:
    assert P.backup_required and P.firewall_default_deny_required
    assert P.restore_test_max_age_days == 7
    assert (P.backup_retention_days_min, P.backup_retention_days_max) == (7, 365)
    assert P.backup_schedules_allowed == {"hourly", "daily", "weekly"}
    assert P.raid_required_min_data_disks == 2 and P.raid_default_min_level == "1"
    assert {22, 2222, 3389, 5900, 623} <= P.management_ports
    assert P.max_open_ports == 16
    assert P.customer_image_channels == {"stable"}
    assert P.imager_image_channels_on_lab_pools == {"stable", "candidate"}
    assert P.lab_pools == {"lab", "vagrant"}
    assert P.waiver_max_days == 90 and P.max_lease_hours == 720


def test_policy_round_trip_and_partial_from_dict() -> None:
    assert Policy.from_dict(P.to_dict()) == P
    custom = Policy.from_dict({"max_open_ports": 4, "raid_min_level": {"db": "6"}, "lab_pools": ["x"]})
    assert custom.max_open_ports == 4 and custom.lab_pools == {"x"} and custom.min_raid_level("db") == "6"
    assert custom.backup_required is True  # untouched fields keep defaults
    assert Policy.from_dict(custom.to_dict()) == custom
    assert custom.to_dict()["lab_pools"] == ["x"]
    assert P.to_dict()["management_ports"] == sorted(P.management_ports)


def test_policy_is_immutable() -> None:
    policy = Policy(raid_min_level={"db": "6"}, lab_pools={"lab"})  # type: ignore[arg-type]
    assert isinstance(policy.lab_pools, frozenset)
    with pytest.raises(TypeError):
        policy.raid_min_level["db"] = "1"  # type: ignore[index]
    with pytest.raises(ValidationError, match="frozen"):
        policy.max_open_ports = 3  # type: ignore[misc]


@pytest.mark.parametrize(("data", "expected"), [
    ({"bogus": 1}, "bogus: unknown field"),
    ({"max_open_ports": True}, "max_open_ports: Input should be a valid integer"),
    ({"max_open_ports": "16"}, "max_open_ports: Input should be a valid integer"),
    ({"backup_required": 1}, "backup_required: Input should be a valid boolean"),
    ({"management_ports": ["22"]}, "management_ports: Input should be a valid integer"),
    ({"management_ports": [0, 22]}, "management_ports: Input should be greater than or equal to 1"),
    ({"management_ports": [65536]}, "management_ports: Input should be less than or equal to 65535"),
    ({"lab_pools": "lab"}, "lab_pools: Input should be a valid frozenset"),
    ({"raid_min_level": ["db"]}, "raid_min_level: Input should be a valid dictionary"),
    ({"raid_min_level": {"db": "0"}}, "raid_min_level: levels {'db': '0'}"),
    ({"raid_min_level": {"db": "7"}}, "raid_min_level: levels {'db': '7'}"),
    ({"raid_default_min_level": "0"}, "raid_default_min_level: '0' is not one of"),
    ({"backup_retention_days_min": 30, "backup_retention_days_max": 10}, "backup_retention_days_max: 10"),
    ({"backup_retention_days_min": 0}, "backup_retention_days_min: Input should be greater than or equal to 1"),
    ({"backup_interval_min_hours": 48, "backup_interval_max_hours": 24}, "backup_interval_max_hours: 24"),
    ({"backup_schedules_allowed": ["monthly"]}, "backup_schedules_allowed: unknown schedules ['monthly']"),
    ({"restore_test_max_age_days": 0}, "restore_test_max_age_days: Input should be greater than or equal to 1"),
    ({"max_open_ports": -1}, "max_open_ports: Input should be greater than or equal to 0"),
    ({"waiver_max_days": 0}, "waiver_max_days: Input should be greater than or equal to 1"),
    # Every number is bounded, so lease and waiver date arithmetic stays inside the calendar.
    ({"waiver_max_days": 10**12}, "waiver_max_days: Input should be less than or equal to 3650"),
    ({"max_lease_hours": 10**12}, "max_lease_hours: Input should be less than or equal to 87600"),
    ({"restore_test_max_age_days": 10**6}, "restore_test_max_age_days: Input should be less than or equal"),
    ({"backup_retention_days_max": 10**9}, "backup_retention_days_max: Input should be less than or equal"),
    ({"max_lease_extensions": 10**9}, "max_lease_extensions: Input should be less than or equal to 1000"),
    ({"lab_pools": ["x" * 65]}, "lab_pools: String should have at most 64 characters"),
    ({"waiver_approver_roles": ["boss"]}, "waiver_approver_roles: unknown roles ['boss']"),
    ({"waiver_approver_roles": []}, "waiver_approver_roles: must name at least one role"),
    ({"lab_image_roles": ["wizard"]}, "lab_image_roles: unknown roles"),
    ({"customer_image_channels": []}, "customer_image_channels: must name at least one"),
    ({"customer_image_channels": [" "]}, "customer_image_channels: empty names"),
    ({"default_lease_hours": 1000}, "default_lease_hours: 1000 outside 1..max_lease_hours (720)"),
    ({"default_lease_hours": 0}, "default_lease_hours: Input should be greater than or equal to 1"),
    ({"default_lease_hours": "x"}, "default_lease_hours: Input should be a valid integer"),
    # Names and ports are sets (uniqueItems in the schema): a repeat is refused, not silently dropped.
    ({"pools_requiring_redundancy": ["db", "web", "db"]}, "pools_requiring_redundancy: items must "
                                                          "be unique; given more than once: 'db'"),
    ({"management_ports": [22, 22]}, "management_ports: items must be unique; given more than once: 22"),
])
def test_policy_from_dict_rejects(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError) as exc:
        Policy.from_dict(data)
    assert isinstance(exc.value, PolicyError)
    assert expected in str(exc.value)


def test_policy_from_dict_lists_all_bad_fields_at_once() -> None:
    with pytest.raises(PolicyError) as exc:
        Policy.from_dict({"bogus": 1, "max_open_ports": "x", "waiver_max_days": 0, "management_ports": [0]})
    fields_named = sorted(e.split(":")[0] for e in exc.value.errors)
    assert fields_named == ["bogus", "management_ports", "max_open_ports", "waiver_max_days"]


def test_policy_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(PolicyError, match="expected an object"):
        Policy.from_dict(["nope"])  # type: ignore[arg-type]


def test_policy_constructor_validates_too() -> None:
    with pytest.raises(PolicyError, match="waiver_max_days"):
        Policy(waiver_max_days=0)


@pytest.mark.parametrize(("redundant_pools", "pool", "expected"), [
    ({"*"}, "default", True),
    ({"*"}, "brand-new-prod", True),  # fail-closed: unlisted pools are protected
    ({"*"}, "lab", False),
    ({"*"}, "vagrant", False),
    ({"default"}, "default", True),
    ({"default"}, "other", False),
    ({"default", "lab"}, "lab", True),  # explicitly listed wins over the lab exemption
    (set(), "default", False),
])
def test_requires_redundancy(redundant_pools: set[str], pool: str, expected: bool) -> None:
    policy = Policy(pools_requiring_redundancy=frozenset(redundant_pools))
    assert policy.requires_redundancy(pool) is expected


# ---------------------------------------------------------------------------- request basics


@pytest.mark.parametrize(("changes", "expected"), [
    ({"tenant": ""}, ["request.tenant_missing"]),
    ({"tenant": "   "}, ["request.tenant_missing"]),
    ({"requester_role": "intern"}, ["request.invalid_role"]),
    ({"count": 0}, ["request.invalid_count"]),
    ({"count": -1}, ["request.invalid_count"]),
    ({"count": 1}, []),
    ({"count": 50}, []),
])
def test_request_basics(changes: dict[str, Any], expected: list[str]) -> None:
    assert codes(g.check_request(req(**changes), P)) == expected


# ---------------------------------------------------------------------------- image


ROLES = ["customer", "imager", "operator", "auditor", "admin"]
CHANNELS = ["stable", "candidate", "experimental"]
POOLS = ["default", "lab", "vagrant"]
# Explicit spec rather than re-deriving it: stable for everyone, candidate only for imagers on lab pools.
ALLOWED = {(r, "stable", p) for r in ROLES for p in POOLS} | {
    ("imager", "candidate", "lab"), ("imager", "candidate", "vagrant")}


@pytest.mark.parametrize(("role", "channel", "pool"), list(itertools.product(ROLES, CHANNELS, POOLS)))
def test_image_channel_by_role_and_pool(role: str, channel: str, pool: str) -> None:
    spec = req(requester_role=role, pool=pool, image=ImageRef("img", channel), data_disks=2)
    found = [v for v in g.check_request(spec, P) if v.rule == "image"]
    if (role, channel, pool) in ALLOWED:
        assert found == []
    else:
        assert codes(found) == ["image.channel_not_allowed"]
        assert not found[0].waivable
        assert repr(role) in found[0].message and repr(channel) in found[0].message
        assert found[0].field == "image.channel"


@pytest.mark.parametrize(("role", "pool"), list(itertools.product(ROLES, POOLS)))
def test_no_image_breaks_no_image_rule(role: str, pool: str) -> None:
    """No image is written: the host keeps its installed OS, whoever asks, on any pool."""
    assert [v for v in g.check_request(req(requester_role=role, pool=pool, image=None), P) if v.rule == "image"] == []
    assert g.allowed_channels(role, pool, P) == {c for (r, c, p) in ALLOWED if (r, p) == (role, pool)}


def test_candidate_on_production_pool_explains_lab_only() -> None:
    (v,) = g.check_request(req(requester_role="imager", image=ImageRef("img", "candidate")), P)
    assert "only available on lab pools" in v.remedy


def test_deprecated_image_is_waivable() -> None:
    (v,) = g.check_request(req(image=ImageRef("centos-7", "stable", deprecated=True)), P)
    assert v.code == "image.deprecated" and v.waivable and "centos-7" in v.message


def test_lab_image_roles_configurable() -> None:
    policy = Policy(lab_image_roles=frozenset({"imager", "admin"}))
    spec = req(requester_role="admin", pool="lab", image=ImageRef("img", "candidate"))
    assert g.check_request(spec, policy) == []


# ---------------------------------------------------------------------------- raid (request)


SINGLE = "raid.single_disk_in_redundant_pool"
DB_POLICY = Policy(raid_min_level={"db": "6"})


@pytest.mark.parametrize(("policy", "pool", "level", "disks", "expected"), [
    (P, "default", None, 2, []),
    (P, "default", None, None, []),  # hardware unknown: disk rules skipped
    (P, "default", "1", 2, []),
    (P, "default", "0", 2, ["raid.required"]),
    (P, "default", None, 1, [SINGLE]),
    (P, "default", None, 0, [SINGLE]),
    (P, "default", "1", 1, [SINGLE]),
    (P, "default", "0", 1, [SINGLE, "raid.required"]),
    (P, "default", "5", 2, ["raid.insufficient_disks"]),
    (P, "default", "5", 3, []),
    (P, "default", "6", 3, ["raid.insufficient_disks"]),
    (P, "default", "6", 4, []),
    (P, "default", "10", 3, ["raid.insufficient_disks"]),
    (P, "default", "10", 4, []),
    (P, "default", "7", 2, ["raid.invalid_level"]),
    (P, "default", "", 2, ["raid.invalid_level"]),
    (P, "default", "raid1", 2, ["raid.invalid_level"]),
    (P, "new-pool", None, 1, [SINGLE]),  # fail-closed
    (P, "lab", None, 1, []),
    (P, "lab", None, 0, []),
    (P, "lab", "0", 2, []),
    (P, "lab", "0", 1, ["raid.insufficient_disks"]),
    (P, "vagrant", "5", 2, ["raid.insufficient_disks"]),
    (P, "vagrant", "7", 2, ["raid.invalid_level"]),
    (DB_POLICY, "db", "6", 4, []),
    (DB_POLICY, "db", "1", 4, ["raid.level_too_low"]),
    (DB_POLICY, "db", "5", 4, ["raid.level_too_low"]),
    (DB_POLICY, "db", "10", 4, ["raid.level_too_low"]),
    (DB_POLICY, "db", "0", 4, ["raid.required"]),
    (DB_POLICY, "db", None, 3, ["raid.insufficient_disks"]),  # the default level is the pool's RAID 6
    (DB_POLICY, "db", None, 4, []),
    (DB_POLICY, "default", "1", 2, []),
    (Policy(raid_default_min_level="5"), "default", "1", 2, []),  # same guaranteed tolerance
    (Policy(raid_required_min_data_disks=3), "default", "1", 2, [SINGLE]),
    (Policy(raid_required_min_data_disks=3), "default", "5", 3, []),
    (Policy(pools_requiring_redundancy=frozenset({"default"})), "other", "0", 1,
     ["raid.insufficient_disks"]),
])
def test_request_raid(policy: Policy, pool: str, level: str | None, disks: int | None,
                      expected: list[str]) -> None:
    spec = req(pool=pool, raid_level=level, data_disks=disks)
    assert codes([v for v in g.check_request(spec, policy) if v.rule == "raid"]) == expected


def test_raid_messages_carry_values() -> None:
    (low,) = g.check_request(req(pool="db", raid_level="1", data_disks=4), DB_POLICY)
    assert "RAID 1" in low.message and "RAID 6" in low.message and low.field == "raid_level"
    (single,) = g.check_request(req(data_disks=1), P)
    assert "1 data disk" in single.message and "'default'" in single.message
    assert single.waivable and "lab" in single.remedy


# ---------------------------------------------------------------------------- firewall (request)


MGMT = "firewall.management_port_open_to_world"


@pytest.mark.parametrize(("rules", "expected"), [
    ([rule(22, "0.0.0.0/0")], [MGMT]),
    ([rule(22, "::/0")], [MGMT]),
    ([rule(22, "10.0.0.0/8")], []),
    ([rule(22, "203.0.113.7/32")], []),
    ([rule(22, "192.168.1.10")], []),  # bare address = /32
    ([rule(22, "1.0.0.0/8")], []),  # /8 is the boundary: not "the world"
    ([rule(22, "2.0.0.0/7")], [MGMT]),
    ([rule(22, "0.0.0.0/1")], [MGMT]),  # half the internet, the /1 split trick
    ([rule(22, "0.0.0.0/1"), rule(22, "128.0.0.0/1")], [MGMT, MGMT]),
    ([rule(22, "2000::/3")], [MGMT]),
    ([rule(22, "2001::/16")], []),
    ([rule(22, "2000::/15")], [MGMT]),
    ([rule(22, "fc00::/7")], []),  # private IPv6 space
    ([rule(22, "10.0.0.0/8", "0.0.0.0/0")], [MGMT]),  # one violation per rule
    ([rule(2222, "0.0.0.0/0")], [MGMT]),
    ([rule(3389, "0.0.0.0/0")], [MGMT]),
    ([rule(5900, "::/0")], [MGMT]),
    ([rule(623, "0.0.0.0/0", proto="udp")], [MGMT]),  # IPMI is UDP
    ([rule(22, "0.0.0.0/0", proto="udp")], [MGMT]),
    ([rule(443, "0.0.0.0/0"), rule(80, "::/0")], []),
    ([rule(1, "10.0.0.0/8")], []),
    ([rule(65535, "10.0.0.0/8")], []),
    ([rule(0, "10.0.0.0/8")], ["firewall.invalid_port"]),
    ([rule(65536, "10.0.0.0/8")], ["firewall.invalid_port"]),
    ([rule(-1, "10.0.0.0/8")], ["firewall.invalid_port"]),
    ([rule(True, "10.0.0.0/8")], ["firewall.invalid_port"]),
    ([rule("22", "10.0.0.0/8")], ["firewall.invalid_port"]),
    ([rule(70000, "0.0.0.0/0")], ["firewall.invalid_port"]),
    ([rule(80, "10.0.0.0/8", proto="icmp")], ["firewall.invalid_protocol"]),
    ([rule(80, "10.0.0.0/8", proto="TCP")], ["firewall.invalid_protocol"]),
    ([rule(80)], ["firewall.invalid_source"]),
    ([rule(80, "10.0.0.5/8")], ["firewall.invalid_source"]),
    ([rule(80, "not-an-ip")], ["firewall.invalid_source"]),
    ([rule(80, "10.0.0.0/33")], ["firewall.invalid_source"]),
    ([rule(80, "")], ["firewall.invalid_source"]),
    ([rule(22, "bad", "0.0.0.0/0")], ["firewall.invalid_source", MGMT]),
    ([rule(0, "bad", proto="sctp")],
     ["firewall.invalid_port", "firewall.invalid_protocol", "firewall.invalid_source"]),
])
def test_request_firewall(rules: list[PortRule], expected: list[str]) -> None:
    assert codes(g.check_request(req(open_ports=tuple(rules)), P)) == expected


def test_firewall_field_paths_and_messages() -> None:
    found = g.check_request(req(open_ports=(rule(443, "0.0.0.0/0"), rule(22, "10.0.0.5/8", "::/0"))), P)
    assert [(v.code, v.field) for v in found] == [
        ("firewall.invalid_source", "open_ports[1].sources[0]"),
        (MGMT, "open_ports[1].sources"),
    ]
    assert "did you mean 10.0.0.0/8" in found[0].message
    assert "22/tcp" in found[1].message and "::/0" in found[1].message


def _ports(n: int, proto: str = "tcp") -> tuple[PortRule, ...]:
    return tuple(rule(8000 + i, "10.0.0.0/8", proto=proto) for i in range(n))


@pytest.mark.parametrize(("rules", "max_open", "expected"), [
    (_ports(16), 16, []),
    (_ports(17), 16, ["firewall.too_many_ports"]),
    (_ports(16) + _ports(1), 16, []),  # a duplicate rule is not another open port
    (_ports(8) + _ports(8, "udp"), 16, []),
    (_ports(8) + _ports(9, "udp"), 16, ["firewall.too_many_ports"]),  # tcp and udp count separately
    ((), 0, []),
    (_ports(1), 0, ["firewall.too_many_ports"]),
])
def test_too_many_ports_boundary(rules: tuple[PortRule, ...], max_open: int, expected: list[str]) -> None:
    found = g.check_request(req(open_ports=rules), Policy(max_open_ports=max_open))
    assert codes(found) == expected
    if expected:
        assert f"{len({(r.port, r.proto) for r in rules})} distinct ports" in found[0].message
        assert found[0].waivable


def test_management_ports_configurable() -> None:
    policy = Policy(management_ports=frozenset({8443}))
    assert codes(g.check_request(req(open_ports=(rule(8443, "0.0.0.0/0"),)), policy)) == [MGMT]
    assert g.check_request(req(open_ports=(rule(22, "0.0.0.0/0"),)), policy) == []


# ---------------------------------------------------------------------------- backup (request)


def backup(**changes: Any) -> BackupSpec:
    return replace(BASE_REQUEST.backup, **changes)


RET = "backup.retention_out_of_bounds"
SCHED = "backup.schedule_invalid"


@pytest.mark.parametrize(("spec", "policy", "expected"), [
    (backup(enabled=False), P, ["backup.required"]),
    (backup(enabled=False, retention_days=0, schedule="never"), P, ["backup.required"]),  # rest moot
    (backup(enabled=False), Policy(backup_required=False), []),
    (backup(paths=()), P, ["backup.paths_missing"]),
    (backup(paths=("srv", "/ok", "")), P, ["backup.path_invalid", "backup.path_invalid"]),
    (backup(retention_days=0), P, [RET]),
    (backup(retention_days=6), P, [RET]),
    (backup(retention_days=7), P, []),
    (backup(retention_days=365), P, []),
    (backup(retention_days=366), P, [RET]),
    (backup(retention_days=True), P, [RET]),
    (backup(schedule="hourly"), P, []),
    (backup(schedule="daily"), P, []),
    (backup(schedule="weekly"), P, []),
    (backup(schedule="DAILY"), P, []),
    (backup(schedule="monthly"), P, [SCHED]),
    (backup(schedule=""), P, [SCHED]),
    (backup(schedule="1h"), P, []),
    (backup(schedule="6h"), P, []),
    (backup(schedule="every 2d"), P, []),
    (backup(schedule="168h"), P, []),
    (backup(schedule="7d"), P, []),
    (backup(schedule="0h"), P, [SCHED]),
    (backup(schedule="169h"), P, [SCHED]),
    (backup(schedule="8d"), P, [SCHED]),
    (backup(schedule="*/5 * * * *"), P, [SCHED]),
    (backup(schedule="hourly"), Policy(backup_schedules_allowed=frozenset({"daily"})), [SCHED]),
    (backup(schedule="2h"), Policy(backup_interval_min_hours=4), [SCHED]),
    (backup(retention_days=3), Policy(backup_retention_days_min=1), []),
    (backup(paths=(), retention_days=1, schedule="x"), P, ["backup.paths_missing", RET, SCHED]),
])
def test_request_backup(spec: BackupSpec, policy: Policy, expected: list[str]) -> None:
    assert codes(g.check_request(req(backup=spec), policy)) == expected


def test_backup_messages_carry_values() -> None:
    ret, sched = g.check_request(req(backup=backup(retention_days=400, schedule="169h")), P)
    assert "400" in ret.message and "7..365" in ret.message and ret.field == "backup.retention_days"
    assert "169h" in sched.message and "168h" in sched.message


# ---------------------------------------------------------------------------- leases


@pytest.mark.parametrize(("hours", "expected"), [
    (None, []), (1, []), (720, []), (0, ["lease.invalid_hours"]), (-5, ["lease.invalid_hours"]),
    (721, ["lease.too_long"]), (2.5, ["lease.invalid_hours"]),
])
def test_request_lease_hours(hours: Any, expected: list[str]) -> None:
    assert codes(g.check_request(req(lease_hours=hours), P)) == expected


@pytest.mark.parametrize(("requested", "policy", "expires", "expected"), [
    (None, P, None, []),  # no default lease: permanent
    (None, Policy(default_lease_hours=24), NOW + timedelta(hours=24), []),
    (1, P, NOW + timedelta(hours=1), []),
    (720, P, NOW + timedelta(hours=720), []),
    (721, P, None, ["lease.too_long"]),
    (0, P, None, ["lease.invalid_hours"]),
])
def test_lease_expiry(requested: int | None, policy: Policy, expires: datetime | None,
                      expected: list[str]) -> None:
    got, violations = g.lease_expiry(requested, NOW, policy)
    assert got == expires and codes(violations) == expected


def test_lease_expiry_accepts_aware_now() -> None:
    got, _ = g.lease_expiry(2, NOW.replace(tzinfo=UTC), P)
    assert got == NOW + timedelta(hours=2) and got.tzinfo is None


@pytest.mark.parametrize(("expires_in_h", "extra", "used", "expected"), [
    (10, 24, 0, []),
    (10, 24, 2, []),
    (10, 24, 3, ["lease.too_many_extensions"]),
    (0, 24, 0, ["lease.expired"]),  # expiring exactly now is expired
    (-1, 24, 0, ["lease.expired"]),
    (10, 710, 0, []),  # reaches exactly max_lease_hours from now
    (10, 711, 0, ["lease.too_long"]),
    (10, 0, 0, ["lease.invalid_hours"]),
    (10, -3, 0, ["lease.invalid_hours"]),
    (-1, 0, 3, ["lease.expired", "lease.too_many_extensions", "lease.invalid_hours"]),
])
def test_can_extend(expires_in_h: int, extra: int, used: int, expected: list[str]) -> None:
    found = g.can_extend(NOW + timedelta(hours=expires_in_h), extra, used, NOW, P)
    assert codes(found) == expected


def test_can_extend_too_long_names_the_headroom() -> None:
    (v,) = g.can_extend(NOW + timedelta(hours=10), 800, 0, NOW, P)
    assert "at most 710 hours" in v.remedy and "800h" in v.message


# ---------------------------------------------------------------------------- host compliance


DAY = timedelta(days=1)


@pytest.mark.parametrize(("changes", "pool", "policy", "expected"), [
    # restore
    ({"last_restore_ok_at": NOW - 7 * DAY}, "default", P, []),  # exactly 7 days is still fine
    ({"last_restore_ok_at": NOW - 7 * DAY - timedelta(seconds=1)}, "default", P, ["restore.stale"]),
    ({"last_restore_ok_at": NOW - 6 * DAY}, "default", P, []),
    ({"last_restore_ok_at": NOW + timedelta(minutes=1)}, "default", P, []),  # clock skew
    ({"last_restore_ok_at": NOW - 3 * DAY}, "default", Policy(restore_test_max_age_days=2),
     ["restore.stale"]),
    ({"last_restore_ok_at": None, "last_restore_passed": None}, "default", P, ["restore.missing"]),
    ({"last_restore_ok_at": None, "last_restore_passed": False}, "default", P, ["restore.missing"]),
    ({"last_restore_passed": False}, "default", P, ["restore.failed"]),
    ({"last_restore_passed": False, "last_restore_ok_at": NOW - 30 * DAY}, "default", P,
     ["restore.failed", "restore.stale"]),
    ({"backup_configured": False, "last_restore_ok_at": None}, "default", P, ["backup.required"]),
    ({"backup_configured": False, "last_restore_ok_at": None}, "default", Policy(backup_required=False), []),
    ({"last_restore_ok_at": None}, "lab", Policy(backup_required=False), ["restore.missing"]),
    # raid
    ({"raid": RaidState(None, "missing")}, "default", P, ["raid.required"]),
    ({"raid": RaidState(None, "clean")}, "default", P, ["raid.required"]),
    ({"raid": RaidState("0", "clean", ("sda", "sdb"))}, "default", P, ["raid.required"]),
    ({"raid": RaidState("1", "degraded", ("sda",))}, "default", P, ["raid.degraded"]),
    ({"raid": RaidState("1", "degraded", ("sda",))}, "lab", P, ["raid.degraded"]),
    ({"raid": RaidState("7", "clean")}, "default", P, ["raid.invalid_level"]),
    ({"raid": RaidState("7", "clean")}, "lab", P, ["raid.invalid_level"]),
    ({"data_disk_count": 1}, "default", P, [SINGLE]),
    ({"data_disk_count": 1, "raid": RaidState(None, "missing")}, "default", P, [SINGLE, "raid.required"]),
    ({"data_disk_count": 1, "raid": RaidState(None, "missing")}, "lab", P, []),
    ({"raid": RaidState("0", "clean")}, "vagrant", P, []),
    ({"raid": RaidState("1", "clean")}, "db", DB_POLICY, ["raid.level_too_low"]),
    ({"raid": RaidState("6", "clean"), "data_disk_count": 4}, "db", DB_POLICY, []),
    # firewall
    ({"firewall": FirewallState("accept")}, "default", P, ["firewall.default_deny_required"]),
    ({"firewall": FirewallState("ACCEPT")}, "default", P, ["firewall.default_deny_required"]),
    ({"firewall": FirewallState("reject")}, "default", P, []),
    ({"firewall": FirewallState("DROP")}, "default", P, []),  # iptables prints upper case
    ({"firewall": FirewallState("accept")}, "default", Policy(firewall_default_deny_required=False), []),
    ({"firewall": FirewallState("drop", (rule(22, "0.0.0.0/0"),))}, "default", P, [MGMT]),
    ({"firewall": FirewallState("drop", (rule(623, "::/0", proto="udp"),))}, "lab", P, [MGMT]),
    ({"firewall": FirewallState("drop", _ports(17))}, "default", P, ["firewall.too_many_ports"]),
])
def test_check_host(changes: dict[str, Any], pool: str, policy: Policy, expected: list[str]) -> None:
    assert codes(g.check_host(host(**changes), policy, pool)) == expected


APPLIED = (rule(443, "0.0.0.0/0"), rule(22, "10.0.0.0/8", "192.168.0.0/16"))


@pytest.mark.parametrize(("actual", "expected_codes", "mentions"), [
    (APPLIED, [], []),
    ((APPLIED[1], APPLIED[0]), [], []),  # order doesn't matter
    ((rule(443, "0.0.0.0/0"), rule(22, "192.168.0.0/16", "10.0.0.0/8")), [], []),
    ((rule(443, "0.0.0.0/0"), rule(22, "192.168.0.0/16", "10.0.0.0/08")), [], []),
    ((*APPLIED, rule(8080, "10.0.0.0/8")), ["firewall.rules_drifted"], ["unexpected: 8080/tcp"]),
    ((APPLIED[0],), ["firewall.rules_drifted"], ["missing: 22/tcp from 10.0.0.0/8, 192.168.0.0/16"]),
    ((APPLIED[0], rule(22, "10.0.0.0/8")), ["firewall.rules_drifted"], ["unexpected: 22/tcp", "missing: 22/tcp"]),
    ((), ["firewall.rules_drifted"], ["missing: 22/tcp", "missing: 22/tcp from 10.0.0.0/8, 192.168.0.0/16; 443"]),
])
def test_firewall_drift(actual: tuple[PortRule, ...], expected_codes: list[str], mentions: list[str]) -> None:
    state = host(firewall=FirewallState("drop", actual, expected_open_ports=APPLIED))
    found = g.check_host(state, P, "default")
    assert codes(found) == expected_codes
    for text in mentions:
        assert text in found[0].message


def test_drift_not_checked_without_expected_rules() -> None:
    assert g.check_host(host(firewall=FirewallState("drop", (rule(8080, "10.0.0.0/8"),))), P, "default") == []


def test_host_accepts_aware_datetimes() -> None:
    state = host(now=NOW.replace(tzinfo=UTC), last_restore_ok_at=NOW - 8 * DAY)
    (v,) = g.check_host(state, P, "default")
    assert v.code == "restore.stale" and "8 days" in v.message


def test_raid_state_rejects_unknown_state() -> None:
    with pytest.raises(ValueError, match="RaidState.state"):
        RaidState("1", "rebuilding")


@pytest.mark.parametrize("changes", [
    {"last_restore_ok_at": NOW - 8 * DAY},
    {"last_restore_ok_at": None},
    {"last_restore_passed": False},
])
def test_handover_makes_restore_non_waivable(changes: dict[str, Any]) -> None:
    state = host(**changes)
    continuous = [v for v in g.check_host(state, P, "default") if v.rule == "restore"]
    handover = [v for v in g.check_handover(state, P, "default") if v.rule == "restore"]
    assert codes(continuous) == codes(handover) and handover
    for v in handover:
        assert not v.waivable and "Handover is blocked" in v.remedy and "cannot be waived" in v.remedy
    assert any(v.waivable for v in continuous) or codes(continuous) == ["restore.failed"]


def test_handover_keeps_other_codes_as_in_check_host() -> None:
    state = host(raid=RaidState("1", "degraded", ("sda",)))
    assert g.check_handover(state, P, "default") == g.check_host(state, P, "default")


# ---------------------------------------------------------------------------- quota


@pytest.mark.parametrize(("quota", "in_use", "pool", "count", "expected"), [
    ({"default": 5}, {"default": 3}, "default", 2, []),  # exactly at the limit
    ({"default": 5}, {"default": 3}, "default", 3, ["quota.exceeded"]),
    ({"default": 5}, {}, "default", 5, []),
    ({"default": 5}, {}, "default", 6, ["quota.exceeded"]),
    ({"default": 5}, {"default": 5}, "default", 0, []),
    ({"default": 5}, {"default": 7}, "default", 1, ["quota.exceeded"]),  # already over
    ({"default": 5}, {}, "lab", 1, ["quota.exceeded"]),  # no quota for the pool = 0
    ({"lab": 0}, {}, "lab", 1, ["quota.exceeded"]),
])
def test_check_quota(quota: dict[str, int], in_use: dict[str, int], pool: str, count: int,
                     expected: list[str]) -> None:
    assert codes(g.check_quota(quota, in_use, pool, count)) == expected


def test_quota_message_and_remedy_have_numbers() -> None:
    (v,) = g.check_quota({"default": 5}, {"default": 3}, "default", 3, tenant="acme")
    assert "'acme' uses 3 of 5 hosts in pool 'default'" in v.message and "6" in v.message
    assert "at most 2" in v.remedy and "at least 6" in v.remedy and not v.waivable
    (none,) = g.check_quota({}, {}, "gpu", 2)
    assert "no quota for pool 'gpu'" in none.message and none.remedy.startswith("Release")
    assert "at least 2" in none.remedy


@pytest.mark.parametrize(("quota", "in_use", "count"), [
    ({"default": 5}, {}, -1), ({"default": -1}, {}, 1), ({"default": 5}, {"default": -2}, 1),
])
def test_quota_rejects_corrupt_numbers(quota: dict[str, int], in_use: dict[str, int], count: int) -> None:
    with pytest.raises(ValueError):
        g.check_quota(quota, in_use, "default", count)


# ---------------------------------------------------------------------------- waivers: applying


DEGRADED = g.check_host(host(raid=RaidState("1", "degraded", ("sda",))), P, "default")[0]
WORLD_SSH = g.check_request(req(open_ports=(rule(22, "0.0.0.0/0"),)), P)[0]
HANDOVER_STALE = g.check_handover(host(last_restore_ok_at=NOW - 8 * DAY), P, "default")[0]
GOOD_WAIVER = Waiver(code="raid.degraded", scope="host:1", approved=True, expires_at=NOW + DAY)


@pytest.mark.parametrize(("violation", "waiver", "scopes", "waived"), [
    (DEGRADED, GOOD_WAIVER, "host:1", True),
    (DEGRADED, replace(GOOD_WAIVER, expires_at=NOW + timedelta(seconds=1)), "host:1", True),
    (DEGRADED, replace(GOOD_WAIVER, expires_at=NOW), "host:1", False),  # expired exactly now
    (DEGRADED, replace(GOOD_WAIVER, expires_at=NOW - DAY), "host:1", False),
    (DEGRADED, replace(GOOD_WAIVER, approved=False), "host:1", False),
    (DEGRADED, replace(GOOD_WAIVER, code="raid.required"), "host:1", False),  # wrong code, same rule
    (DEGRADED, GOOD_WAIVER, "host:2", False),  # wrong scope
    (DEGRADED, GOOD_WAIVER, "host:10", False),  # no prefix matching
    (DEGRADED, replace(GOOD_WAIVER, scope="tenant:acme"), "host:1", False),
    (DEGRADED, replace(GOOD_WAIVER, scope="tenant:acme"), ("host:1", "tenant:acme"), True),
    (DEGRADED, replace(GOOD_WAIVER, expires_at=(NOW + DAY).replace(tzinfo=UTC)), "host:1", True),
    (WORLD_SSH, replace(GOOD_WAIVER, code=MGMT), "host:1", False),  # non-waivable code
    (HANDOVER_STALE, replace(GOOD_WAIVER, code="restore.stale"), "host:1", False),  # not at handover
])
def test_apply_waivers(violation: Violation, waiver: Waiver, scopes: str | tuple[str, ...], waived: bool) -> None:
    remaining, done = g.apply_waivers([violation], [waiver], NOW, scopes)
    assert (done, remaining) == (([violation], []) if waived else ([], [violation]))


def test_apply_waivers_partitions_in_order() -> None:
    stale = g.check_host(host(last_restore_ok_at=NOW - 8 * DAY), P, "default")[0]
    violations = [WORLD_SSH, DEGRADED, stale]
    waivers = [GOOD_WAIVER, replace(GOOD_WAIVER, code="restore.stale", approved=False)]
    remaining, waived = g.apply_waivers(violations, iter(waivers), NOW, "host:1")
    assert remaining == [WORLD_SSH, stale] and waived == [DEGRADED]
    assert g.apply_waivers([], waivers, NOW, "host:1") == ([], [])


def test_scope_helper() -> None:
    assert g.scope("host", 42) == "host:42" and g.scope("tenant", "acme") == "tenant:acme"
    with pytest.raises(ValueError):
        g.scope("machine", 1)


# ---------------------------------------------------------------------------- waivers: requesting


GOOD_JUSTIFICATION = "replacement disk ships Friday; array still has one healthy mirror"
ASKER = Actor("alice", "customer")


def ask(**changes: Any) -> list[str]:
    args: dict[str, Any] = {"code": "raid.degraded", "justification": GOOD_JUSTIFICATION,
                            "expires_at": NOW + 30 * DAY, "now": NOW, "asker": ASKER, "policy": P}
    args.update(changes)
    return codes(g.validate_waiver_request(**args))


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, []),
    ({"code": "no.such.code"}, ["waiver.unknown_code"]),
    ({"code": MGMT}, ["waiver.code_not_waivable"]),
    ({"code": "image.channel_not_allowed"}, ["waiver.code_not_waivable"]),
    ({"code": "restore.failed"}, ["waiver.code_not_waivable"]),
    ({"code": "restore.stale"}, []),
    ({"justification": ""}, ["waiver.justification_too_short"]),
    ({"justification": "n/a"}, ["waiver.justification_too_short"]),
    ({"justification": "a" * 40}, ["waiver.justification_too_short"]),
    ({"justification": "need it need it need it need it"}, ["waiver.justification_too_short"]),
    ({"justification": "disk ships Friday ok"}, []),  # exactly 20 characters, 4 words
    ({"justification": "disk ships Friday o"}, ["waiver.justification_too_short"]),  # 19
    ({"expires_at": None}, ["waiver.expiry_missing"]),
    ({"expires_at": NOW}, ["waiver.expiry_not_in_future"]),
    ({"expires_at": NOW - DAY}, ["waiver.expiry_not_in_future"]),
    ({"expires_at": NOW + timedelta(seconds=1)}, []),
    ({"expires_at": NOW + 90 * DAY}, []),
    ({"expires_at": NOW + 90 * DAY + timedelta(seconds=1)}, ["waiver.expiry_too_far"]),
    ({"expires_at": NOW + 10 * DAY, "policy": Policy(waiver_max_days=7)}, ["waiver.expiry_too_far"]),
    ({"expires_at": (NOW + DAY).replace(tzinfo=UTC)}, []),
    ({"scope": "host:1"}, []),
    ({"scope": "tenant:acme"}, []),
    ({"scope": "request:7"}, []),
    ({"scope": "host"}, ["waiver.scope_invalid"]),
    ({"scope": "host:"}, ["waiver.scope_invalid"]),
    ({"scope": "machine:1"}, ["waiver.scope_invalid"]),
    ({"approver": Actor("bob", "operator")}, []),
    ({"approver": Actor("bob", "admin")}, []),
    ({"approver": Actor("bob", "customer")}, ["waiver.approver_not_authorized"]),
    ({"approver": Actor("bob", "imager")}, ["waiver.approver_not_authorized"]),
    ({"approver": Actor("bob", "auditor")}, ["waiver.approver_not_authorized"]),
    ({"asker": Actor("alice", "admin"), "approver": Actor("alice", "admin")}, ["waiver.self_approval"]),
    ({"asker": Actor("alice", "operator"), "approver": Actor(" Alice", "operator")}, ["waiver.self_approval"]),
    ({"approver": Actor("alice", "customer")}, ["waiver.self_approval", "waiver.approver_not_authorized"]),
    ({"code": MGMT, "justification": "x", "expires_at": None, "approver": Actor("alice", "auditor")},
     ["waiver.code_not_waivable", "waiver.justification_too_short", "waiver.expiry_missing",
      "waiver.self_approval", "waiver.approver_not_authorized"]),
])
def test_validate_waiver_request(changes: dict[str, Any], expected: list[str]) -> None:
    assert ask(**changes) == expected


def test_waiver_expiry_message_names_the_limit() -> None:
    (v,) = g.validate_waiver_request(code="raid.degraded", justification=GOOD_JUSTIFICATION,
                                     expires_at=NOW + 100 * DAY, now=NOW, asker=ASKER, policy=P)
    assert "90 days" in v.message and "2025-04-15T12:00:00Z" in v.remedy


# ---------------------------------------------------------------------------- policy bounds


def _upper_bound(name: str) -> int | None:
    for meta in Policy.model_fields[name].metadata:
        le = getattr(meta, "le", None)
        if le is not None:
            return int(le)
    return None


def test_every_policy_number_is_bounded_and_the_maxima_stay_in_the_calendar() -> None:
    numbers = [n for n, v in Policy().to_dict().items() if type(v) is int]
    assert "default_lease_hours" not in numbers  # None by default; bounded through its annotation below
    unbounded = [n for n in numbers if _upper_bound(n) is None]
    assert unbounded == [], f"policy numbers without an upper bound: {unbounded}"
    with pytest.raises(PolicyError):
        Policy(default_lease_hours=87_601, max_lease_hours=87_600)
    maxima = {n: _upper_bound(n) for n in numbers}
    maxima["backup_retention_days_min"] = maxima["backup_retention_days_max"] = 3650
    maxima["backup_interval_min_hours"] = 1
    policy = Policy(**maxima, default_lease_hours=maxima["max_lease_hours"])
    # Far in the future, every date the guardrails compute still exists.
    late = datetime(2999, 12, 31, 23, 59)
    expires, problems = g.lease_expiry(None, late, policy)
    assert problems == [] and expires is not None and expires.year < 9999
    assert codes(g.can_extend(expires, policy.max_lease_hours, 0, late, policy)) == ["lease.too_long"]
    assert g.validate_waiver_request(code="raid.degraded", now=late,
                                     justification="the replacement disk arrives monday " * 60,
                                     expires_at=late + timedelta(days=policy.waiver_max_days), asker=ASKER,
                                     policy=policy) == []
    old = host(now=late, last_restore_ok_at=late - timedelta(days=policy.restore_test_max_age_days + 1))
    assert "restore.stale" in codes(g.check_host(old, policy, "default"))
