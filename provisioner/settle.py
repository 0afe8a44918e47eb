"""Ending a job: final status, SLIs, and the host and request states that follow, in one transaction.

Used by the worker (normal end), the reconciler (dead worker) and the API (cancel of a queued job).
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, select

from provisioner import audit
from provisioner.host_transitions import cas_state
from provisioner.imaging.canary import record_canary_outcome
from provisioner.lifecycle import can_transition
from provisioner.models import Host, HostRequest, Job
from provisioner.sli import PhaseTiming, compute_slis
from provisioner.timeutil import parse_iso, utcnow


def slis_for(job: Job, status: str) -> dict:
    phases = [PhaseTiming(p["name"], parse_iso(p.get("started_at")), parse_iso(p.get("ended_at")), p.get("status", ""))
              for p in job.phases or []]
    return compute_slis(
        accepted_at=job.accepted_at,
        queued_at=job.queued_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        phases=phases,
        status=status,
        slo_target_s=job.slo_target_s or 0.0,
    )


def host_target(kind: str, status: str, driver: str, started: bool) -> str | None:
    """Where the host goes when a job of this kind ends with this status (None: it stays)."""
    if kind == "compliance":
        return None
    if status == "succeeded":
        return {"commission": "available", "provision": "active",
                "release": "retired" if driver == "vagrant" else "available"}.get(kind)
    if status == "cancelled" and not started and kind == "provision":
        return "available"
    if status == "cancelled" and not started and kind == "commission":
        return None
    return "failed"


def settle(session: Session, job: Job, status: str, error: str | None = None,
           *, expect_worker: str | None = None, actor: str = "worker") -> bool:
    """Compare-and-set the job into its final status; returns False if someone else settled it first."""
    now = utcnow()
    started = job.started_at is not None
    job.finished_at = now
    sli = slis_for(job, status)
    cond = [Job.id == job.id, Job.status.in_(["queued", "running"])]  # type: ignore[attr-defined]
    if expect_worker is not None:
        cond.append(Job.worker_id == expect_worker)  # type: ignore[arg-type]
    res = session.execute(
        update(Job).where(*cond).values(
            status=status, finished_at=now, error=error, lease_until=None, sli=sli,
            slo_met=sli["slo_met"], phases=job.phases, current_phase=None,
        )
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    host = session.get(Host, job.host_id)
    if host is not None:
        target = host_target(job.kind, status, host.driver, started)
        if target and host.state != target and can_transition(host.state, target):
            extra: dict = {}
            if target in ("available", "retired"):
                extra = {"tenant_id": None, "request_id": None}
            cas_state(session, host.id or 0, host.state, target, **extra)
            audit.record(session, actor_id=None, actor_name=actor, action="host.state", object_type="host",
                         object_id=host.id, tenant_id=job.tenant_id, before={"state": host.state},
                         after={"state": target, "job_id": job.id, "job_status": status})
    audit.record(session, actor_id=None, actor_name=actor, action=f"job.{status}", object_type="job",
                 object_id=job.id, tenant_id=job.tenant_id, after={"error": error, "slo_met": sli["slo_met"]})
    if job.request_id is not None:
        _settle_request(session, job.request_id, now)
    record_canary_outcome(session, job)  # no-op unless the job was an image canary (or a corrupt image)
    session.commit()
    return True


def _settle_request(session: Session, request_id: int, now) -> None:  # type: ignore[no-untyped-def]
    req = session.get(HostRequest, request_id)
    if req is None:
        return
    jobs = session.exec(select(Job).where(Job.request_id == request_id)).all()
    if req.status == "provisioning":
        prov = [j for j in jobs if j.kind == "provision"]
        if all(j.status in ("succeeded", "failed", "cancelled") for j in prov):
            req.status = "ready" if all(j.status == "succeeded" for j in prov) else "failed"
            if req.status == "ready":
                req.ready_at = now
    elif req.status == "releasing":
        rel = [j for j in jobs if j.kind == "release"]
        if rel and all(j.status in ("succeeded", "failed", "cancelled") for j in rel):
            req.status = "released" if all(j.status == "succeeded" for j in rel) else "release_failed"
            req.released_at = now
    session.add(req)
