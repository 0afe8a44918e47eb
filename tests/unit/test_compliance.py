"""The compliance verdict from a check's observations: every guardrail drift, waivers, restore."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from provisioner.core import guardrails
from provisioner.core.compliance import evaluate, raid_state

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
APPLIED = {"firewall": {"open_ports": [{"port": 8080, "proto": "tcp", "sources": ["192.168.121.0/24"]}]}}


def healthy(**over: dict) -> dict:
    check = {
        "raid": {"level": "1", "state": "clean", "degraded": False, "members": ["/dev/vdb", "/dev/vdc"]},
        "firewall": {"default_policy_input": "drop", "drifted": False,
                     "open_ports": [{"port": 8080, "proto": "tcp", "sources": ["192.168.121.0/24"]}]},
        "restore": {"passed": True, "verified_at": "2026-11-25T11:59:00Z"},
        "repository": {"ok": True},
        "backup_configured": True,
        "data_disk_count": 2,
    }
    check.update(over)
    return check


def verdict(check: dict, waivers: list | None = None, **kw: object) -> dict:
    args = {"applied": APPLIED, "last_restore_at": NOW - timedelta(days=1), "last_restore_passed": True,
            "pool": "default", "policy": guardrails.Policy(), "waivers": waivers or [], "scopes": ["host:1"],
            "now": NOW} | kw
    return evaluate(check, **args)  # type: ignore[arg-type]


def codes(v: dict) -> set[str]:
    return {x["code"] for x in v["violations"]}


def test_healthy_host_is_compliant() -> None:
    v = verdict(healthy())
    assert v["compliant"] and v["violations"] == [] and v["restore_passed"] is True


@pytest.mark.parametrize("change,code", [
    ({"raid": {"level": "1", "state": "active, degraded", "degraded": True, "members": ["/dev/vdb"]}}, "raid.degraded"),
    ({"raid": {"state": "missing"}}, "raid.required"),
    ({"firewall": {"default_policy_input": "accept", "drifted": True, "open_ports": []}},
     "firewall.default_deny_required"),
    ({"firewall": {"default_policy_input": "drop", "drifted": True,
                   "open_ports": [{"port": 22, "proto": "tcp", "sources": ["0.0.0.0/0"]}]}},
     "firewall.management_port_open_to_world"),
    ({"firewall": {"default_policy_input": "drop", "drifted": True, "open_ports": []}}, "firewall.rules_drifted"),
    ({"restore": {"passed": False, "error": "checksum mismatch"}}, "restore.failed"),
    ({"repository": {"ok": False, "error": "pack abc is damaged"}}, "restore.failed"),
    ({"backup_configured": False}, "backup.required"),
])
def test_each_drift_is_reported(change: dict, code: str) -> None:
    v = verdict(healthy(**change))
    assert not v["compliant"] and code in codes(v), v


def test_repository_error_text_reaches_the_reason() -> None:
    v = verdict(healthy(repository={"ok": False, "error": "pack abc is damaged"}))
    msg = next(x["message"] for x in v["violations"] if x["code"] == "restore.failed")
    assert "pack abc is damaged" in msg


def test_stale_restore_when_the_check_could_not_restore() -> None:
    check = healthy()
    del check["restore"]
    v = verdict(check, last_restore_at=NOW - timedelta(days=8))
    assert "restore.stale" in codes(v)


def test_waiver_for_exactly_that_code_and_scope() -> None:
    check = healthy(raid={"level": "1", "state": "degraded", "degraded": True, "members": ["/dev/vdb"]})
    ok = guardrails.Waiver("raid.degraded", "host:1", True, NOW + timedelta(days=1))
    other = guardrails.Waiver("raid.degraded", "host:2", True, NOW + timedelta(days=1))
    expired = guardrails.Waiver("raid.degraded", "host:1", True, NOW)
    assert verdict(check, [ok])["compliant"] is True
    assert verdict(check, [other])["compliant"] is False
    assert verdict(check, [expired])["compliant"] is False


@pytest.mark.parametrize("obs,state", [
    ({"level": "raid1", "state": "clean"}, ("1", "clean")),
    ({"level": "1", "state": "active"}, ("1", "clean")),
    ({"level": "1", "state": "clean", "degraded": True}, ("1", "degraded")),
    ({}, (None, "missing")),
])
def test_raid_state_normalisation(obs: dict, state: tuple) -> None:
    r = raid_state(obs)
    assert (r.level, r.state) == state


PLAN = {"paths": ["/srv/app", "/etc"], "retention_days": 21, "schedule": "*-*-* 00/6:00:00"}


def test_installed_backup_is_checked_against_the_request() -> None:
    as_asked = healthy(backup={"config": {"paths": ["/etc", "/srv/app"], "retention_days": 21,
                                          "schedule": "*-*-* 00/6:00:00"}})
    assert verdict(as_asked, expected_backup=PLAN)["compliant"] is True
    # The playbook defaults (7 days, daily, /etc + /srv/data) are not what was promised.
    defaults = healthy(backup={"config": {"paths": ["/etc", "/srv/data"], "retention_days": 7, "schedule": "daily"}})
    v = verdict(defaults, expected_backup=PLAN)
    assert codes(v) == {"backup.config_drifted"}
    message = v["violations"][0]["message"]
    assert "retention is 7 days, the request asked for 21" in message and "'daily'" in message
    unreadable = verdict(healthy(backup={"config": None}), expected_backup=PLAN)
    assert codes(unreadable) == {"backup.config_drifted"}


def test_disabled_backup_ignores_restore_results_and_waiver_covers_it() -> None:
    off = healthy(backup_configured=False, restore={"passed": False, "error": "not configured"},
                  repository={"ok": None})
    assert codes(verdict(off)) == {"backup.required", "restore.failed"}
    waiver = guardrails.Waiver("backup.required", "host:1", True, NOW + timedelta(days=1))
    v = verdict(off, [waiver], backup_disabled=True)
    assert v["compliant"] is True and [x["code"] for x in v["waived"]] == ["backup.required"]
