"""The last guardrail before a customer gets a host: `guardrails.check_handover` on what the
provisioning phases really did to the host, with the waivers that cover it.

The runner asks before the handover phase (which installs the customer's key): a refused host is
never handed over, and its job fails with `guardrails.handover_refused` naming every violation.
The verdict, passed or not, is stored as the host's compliance record (`source: handover`) so the
host view shows which waivers it was handed over under.

Facts come from the phase results recorded on the host (`host.results`) and the job's own phase
records: a backup counts as configured only when this job's backup phase succeeded.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from provisioner.core import guardrails
from provisioner.core.compliance import raid_state
from provisioner.core.errors import Conflict
from provisioner.core.timeutil import iso, utcnow
from provisioner.services import audit, host_waivers
from provisioner.services.admission import active_waivers, load_policy
from provisioner.store.models import Host, Job


class HandoverRefused(Conflict):
    """The host breaks the guardrails as provisioned: it is not handed over."""


def _ports(items: Any) -> tuple[guardrails.PortRule, ...]:
    return tuple(guardrails.PortRule(p["port"], str(p.get("proto", "tcp")), tuple(p.get("sources") or ()))
                 for p in items or [] if isinstance(p, dict) and isinstance(p.get("port"), int))


def _data_disk_count(host: Host) -> int:
    hw = host.hardware or {}
    disks = hw.get("data_disks")
    return len(disks) if isinstance(disks, list) else len(hw.get("disks") or [])


def _section(results: dict[str, Any], name: str) -> dict[str, Any]:
    value = results.get(name)
    return value if isinstance(value, dict) else {}


def facts(host: Host, job: Job) -> guardrails.HostFacts:
    results = host.results or {}
    fw, raid = _section(results, "firewall"), _section(results, "raid")
    backup_ran = any(p.get("name") == "backup" and p.get("status") == "succeeded" for p in job.phases or [])
    return guardrails.HostFacts(
        data_disk_count=_data_disk_count(host),
        raid=raid_state(raid),
        firewall=guardrails.FirewallState(str(fw.get("policy") or "missing"), _ports(fw.get("open_ports"))),
        last_restore_ok_at=host.last_restore_at if host.last_restore_passed else None,
        last_restore_passed=host.last_restore_passed,
        backup_configured=backup_ran,
        now=utcnow(),
    )


def check(session: Session, host: Host, job: Job) -> None:
    """Store the handover verdict on the host and commit; raise HandoverRefused when it fails."""
    now = utcnow()
    scopes = host_waivers.scopes_for(session, host)
    violations = guardrails.check_handover(facts(host, job), load_policy(session), host.pool)
    remaining, waived = guardrails.apply_waivers(violations, active_waivers(session, scopes), now, scopes)
    host.compliance = {"compliant": not remaining, "violations": [v.to_dict() for v in remaining],
                       "waived": [v.to_dict() for v in waived], "checked_at": iso(now),
                       "restore_passed": host.last_restore_passed, "restore_verified_at": iso(host.last_restore_at),
                       "source": "handover", "job_id": job.id}
    session.add(host)
    if remaining:
        audit.record(session, actor_id=None, actor_name="handover", object_type="host", object_id=host.id,
                     action="host.handover_refused", tenant_id=host.tenant_id,
                     after={"codes": [v.code for v in remaining], "job_id": job.id})
    session.commit()
    if remaining:
        raise HandoverRefused(
            "guardrails.handover_refused",
            f"host {host.name} is not handed over: " + "; ".join(v.message for v in remaining),
            hint="; ".join(dict.fromkeys(v.remedy for v in remaining)),
            codes=[v.code for v in remaining])
