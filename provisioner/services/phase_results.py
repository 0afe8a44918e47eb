"""What a phase's result means for the host: facts, the VM's address, the restore test, and the
compliance verdict of a check. The runner hands each successful phase's result here and moves on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from provisioner.core import backup_plan
from provisioner.core.compliance import evaluate
from provisioner.core.errors import DomainError
from provisioner.core.root_disk import hint_from_labels, root_disk, stable_path
from provisioner.core.timeutil import iso, parse_iso, utcnow
from provisioner.services import audit, webhooks
from provisioner.services.admission import active_waivers, load_policy
from provisioner.store.models import Host, HostRequest, Job, Tenant


def apply_phase_result(session: Session, host: Host, result: dict[str, Any], *, job_id: int | None) -> None:
    """Record what a phase reported on the host and commit."""
    if not result:
        return
    if isinstance(result.get("compliance"), dict):
        # A check observes; it does not overwrite what the provisioning phases applied.
        record_compliance(session, host, result["compliance"], job_id=job_id)
        session.commit()
        return
    merged = dict(host.results or {})
    merged.update(result)
    host.results = merged
    vm = result.get("vm")
    if isinstance(vm, dict) and vm.get("address"):
        host.address = vm["address"]
        host.port = int(vm.get("port") or 22)
        host.ssh_user = vm.get("user") or host.ssh_user
        host.credential_path = vm.get("private_key") or host.credential_path
    nested = result.get("commission")
    commission: dict[str, Any] = nested if isinstance(nested, dict) else result
    facts = commission.get("facts")
    if isinstance(facts, dict):
        hw = dict(facts)
        if isinstance(commission.get("data_disks"), list):
            hw["data_disks"] = commission["data_disks"]
        host.hardware = hw
    refused = None
    inspected = result.get("inspect")
    if isinstance(inspected, dict):
        refused = record_inspection(host, inspected)
    rv = result.get("restore_verify")
    if isinstance(rv, dict):
        host.last_restore_passed = bool(rv.get("passed"))
        if rv.get("passed"):
            host.last_restore_at = utcnow()
        _restore_on_job(session, job_id, host.last_restore_passed)
    host.updated_at = utcnow()
    session.add(host)
    session.commit()
    if refused is not None:
        # Raised after the commit: the inspection stays on the host for the operator to read, and
        # the job fails with the rule's code and reason (the runner turns a DomainError into both).
        raise refused


def record_inspection(host: Host, inspected: dict[str, Any]) -> DomainError | None:
    """The deploy ramdisk's inventory onto the host: the facts allocation and the phases read
    (cpus, memory_mb, disks, nics), the root disk the image goes to (core.root_disk: Ironic's
    default, or the host's root_disk.* labels) and the data disks (every other disk), each by its
    stable path (core.root_disk.stable_path: the deployed OS may give the disks other kernel names),
    and the whole inspection under `inspected`. The refusal when no disk can be the root disk, or None."""
    hw = dict(host.hardware or {})
    disks = [d for d in inspected.get("disks") or [] if isinstance(d, dict) and d.get("name")]
    hw.update({k: inspected[k] for k in ("cpus", "cpu_model", "memory_mb", "nics", "system") if k in inspected})
    hw.update(disks=disks, inspected=inspected, inspected_at=iso(utcnow()))
    refused: DomainError | None = None
    try:
        chosen = root_disk(disks, hint_from_labels(host.labels))
    except DomainError as exc:
        refused = exc
        hw.update(root_disk=None, root_disk_error={"code": exc.code, "detail": exc.detail, "hint": exc.hint})
        # Without a root disk nothing is a data disk yet: no phase may take the root disk for data.
        hw["data_disks"] = []
    else:
        hw.pop("root_disk_error", None)
        hw.update(root_disk=stable_path(chosen), data_disks=[stable_path(d) for d in disks if d is not chosen])
    host.hardware = hw
    return refused


def record_compliance(session: Session, host: Host, check: dict[str, Any], *, job_id: int | None) -> None:
    """Judge a compliance check's observations against the policy and the host's waivers, store the
    verdict on the host, and audit a change of verdict. The caller commits."""
    tenant = session.get(Tenant, host.tenant_id) if host.tenant_id else None
    scopes = [f"host:{host.id}"] + ([f"tenant:{tenant.name}"] if tenant else []) + (
        [f"request:{host.request_id}"] if host.request_id else [])
    req = session.get(HostRequest, host.request_id) if host.request_id else None
    block = (req.params or {}).get("backup") if req is not None else None
    expected = backup_plan.plan(block) if isinstance(block, dict) else None
    verdict = evaluate(check, applied=host.results or {}, last_restore_at=host.last_restore_at,
                       last_restore_passed=host.last_restore_passed, pool=host.pool, policy=load_policy(session),
                       waivers=active_waivers(session, scopes), scopes=scopes, now=utcnow(),
                       expected_backup=expected,
                       backup_disabled=isinstance(block, dict) and not block.get("enabled", True))
    before = (host.compliance or {}).get("compliant")
    host.compliance = verdict
    if verdict.get("restore_passed") is not None:
        host.last_restore_passed = verdict["restore_passed"]
        if verdict["restore_passed"] and verdict.get("restore_verified_at"):
            host.last_restore_at = parse_iso(verdict["restore_verified_at"])
    # The restore-test SLO counts every check: one whose restore did not run has not passed it.
    _restore_on_job(session, job_id, bool(verdict.get("restore_passed")))
    session.add(host)
    if before != verdict["compliant"]:
        audit.record(session, actor_id=None, actor_name="compliance", object_type="host", object_id=host.id,
                     action="host.compliant" if verdict["compliant"] else "host.noncompliant",
                     tenant_id=host.tenant_id, before={"compliant": before},
                     after={"compliant": verdict["compliant"], "codes": [v["code"] for v in verdict["violations"]],
                            "job_id": job_id})
        if not verdict["compliant"] and host.tenant_id is not None:
            webhooks.emit(session, "compliance.drift", {
                "host_id": host.id, "host": host.name, "request_id": host.request_id, "job_id": job_id,
                "violations": [{"code": v["code"], "message": v.get("message")} for v in verdict["violations"]]},
                tenant_id=host.tenant_id)


def _restore_on_job(session: Session, job_id: int | None, passed: bool) -> None:
    if job_id is not None:
        session.execute(update(Job).where(col(Job.id) == job_id).values(restore_passed=passed)
                        .execution_options(synchronize_session=False))
