"""Continuous compliance: turn a compliance check's observations into the guardrail verdict for a
host, and say when a host is due its next check. Pure; storing a verdict is
`provisioner.services.phase_results`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from provisioner.core import backup_plan, guardrails
from provisioner.core.timeutil import iso, parse_iso


def _ports(items: Any) -> tuple[guardrails.PortRule, ...]:
    rules = []
    for p in items or []:
        if isinstance(p, dict) and isinstance(p.get("port"), int):
            rules.append(guardrails.PortRule(p["port"], p.get("proto", "tcp"), tuple(p.get("sources") or [])))
    return tuple(rules)


def raid_state(obs: dict[str, Any]) -> guardrails.RaidState:
    level = obs.get("level")
    state = str(obs.get("state") or "").lower()
    if obs.get("missing") or state in ("missing", "") or level in (None, ""):
        return guardrails.RaidState(None, "missing")
    # An inactive array serves nothing: as bad as degraded for the customer's data.
    degraded = bool(obs.get("degraded")) or any(w in state for w in ("degraded", "fail", "inactive"))
    return guardrails.RaidState(str(level).removeprefix("raid"), "degraded" if degraded else "clean",
                                tuple(obs.get("members") or ()))


def evaluate(check: dict[str, Any], *, applied: dict[str, Any], last_restore_at: datetime | None,
             last_restore_passed: bool | None, pool: str, policy: guardrails.Policy,
             waivers: list[guardrails.Waiver], scopes: list[str], now: datetime,
             expected_backup: dict[str, Any] | None = None, backup_disabled: bool = False) -> dict[str, Any]:
    """The verdict from one check. `applied` is what the provisioning phases recorded on the host;
    `expected_backup` is `backup_plan.plan` of the request's backup block, checked against the
    configuration the check read from the host. `backup_disabled`: the request switched backups off
    (admitted by policy or waiver), so restore and repository results mean nothing for this host."""
    fw = check.get("firewall") or {}
    restore = {} if backup_disabled else check.get("restore") or {}
    repo = {} if backup_disabled else check.get("repository") or {}
    installed = (check.get("backup") or {}).get("config") if isinstance(check.get("backup"), dict) else None
    drift = backup_plan.drift(expected_backup, installed) if expected_backup is not None else []
    passed = bool(restore.get("passed")) and repo.get("ok", True) is not False
    restore_at = parse_iso(restore.get("verified_at")) if passed and restore.get("verified_at") else None
    state = guardrails.HostFacts(
        data_disk_count=int(check.get("data_disk_count") or 0),
        raid=raid_state(check.get("raid") or {}),
        firewall=guardrails.FirewallState(
            str(fw.get("default_policy_input") or "missing"), _ports(fw.get("open_ports")),
            _ports((applied.get("firewall") or {}).get("open_ports")) if "open_ports" in fw else None),
        last_restore_ok_at=restore_at or (now if passed else last_restore_at),
        last_restore_passed=passed if restore else last_restore_passed,
        backup_configured=bool(check.get("backup_configured", True)),
        now=now,
        backup_drift=tuple(drift),
    )
    violations = guardrails.check_host(state, policy, pool)
    if fw.get("drifted") and not any(v.code.startswith("firewall.") for v in violations):
        violations.append(guardrails.Violation(
            "firewall.rules_drifted", "firewall",
            "the live ruleset differs from what the firewall phase applied"
            + (f": {'; '.join(map(str, fw['reasons']))}" if fw.get("reasons") else ""),
            "Re-apply the firewall and find out who changed it.", "firewall", True))
    failures = []
    if not passed and restore:
        failures.append(restore.get("error") or "restore test failed")
    if repo.get("ok") is False:
        failures.append(f"backup repository check failed: {repo.get('error') or 'unknown error'}")
    if failures:
        # Say why the restore failed, in the check's own words.
        existing = next((v for v in violations if v.code == "restore.failed"), None)
        violations = [v for v in violations if v.code != "restore.failed"]
        violations.append(guardrails.Violation(
            "restore.failed", "restore", "; ".join(failures),
            existing.remedy if existing else "Repair or re-create the backup repository, then re-run the check.",
            "restore", existing.waivable if existing else False))
    remaining, waived = guardrails.apply_waivers(violations, waivers, now, scopes)
    return {
        "compliant": not remaining,
        "violations": [v.to_dict() for v in remaining],
        "waived": [v.to_dict() for v in waived],
        "checked_at": iso(now),
        "restore_passed": passed if restore else None,
        "restore_verified_at": iso(restore_at),
    }


def is_due(compliance: dict | None, active_since: datetime | None, now: datetime, interval_s: float) -> bool:
    """Due when the last check (or, never checked, the handover) is older than the interval."""
    if interval_s <= 0:
        return False
    last = parse_iso((compliance or {}).get("checked_at")) or active_since
    return last is None or now - last >= timedelta(seconds=interval_s)
