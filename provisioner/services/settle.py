"""Ending a job: final status, SLIs, and the host and request states that follow, in one transaction.

Used by the worker (normal end), the reconciler (dead worker) and the API (cancel of a queued job).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from provisioner.core.lifecycle import can_transition, host_after_job
from provisioner.core.sli import PhaseTiming, compute_slis
from provisioner.core.slo import job_facts
from provisioner.core.timeutil import parse_iso, utcnow
from provisioner.imaging.canary import record_canary_outcome
from provisioner.services import audit, job_tally, webhooks
from provisioner.services.host_transitions import cas_state
from provisioner.services.slo_report import configured_slos
from provisioner.store.config import get_settings
from provisioner.store.models import Host, HostRequest, Job


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


def settle(session: Session, job: Job, status: str, error: str | None = None,
           *, error_code: str | None = None, expect_worker: str | None = None, actor: str = "worker") -> bool:
    """Compare-and-set the job into its final status; returns False if someone else settled it first."""
    now = utcnow()
    started = job.started_at is not None
    job.finished_at = now
    sli = slis_for(job, status)
    cond = [col(Job.id) == job.id, col(Job.status).in_(["queued", "running"])]
    if expect_worker is not None:
        cond.append(col(Job.worker_id) == expect_worker)
    res = session.exec(
        update(Job).where(*cond).values(
            status=status, finished_at=now, error=error, error_code=error_code, claim_until=None, sli=sli,
            slo_met=sli["slo_met"], phases=job.phases, current_phase=None,
            # A deploy's keys serve only while its job runs: the OS key is pinned on the host by now.
            deploy_secret_ciphertext=None,
        )
    )
    if res.rowcount != 1:
        session.rollback()
        return False
    host = session.get(Host, job.host_id)
    if host is not None:
        _move_host(session, job, host, status, started, error, actor, error_code)
    audit.record(session, actor_id=None, actor_name=actor, action=f"job.{status}", object_type="job",
                 object_id=job.id, tenant_id=job.tenant_id, after={"error": error, "slo_met": sli["slo_met"]})
    if status in ("succeeded", "failed") and job.tenant_id is not None:
        webhooks.emit(session, f"job.{status}", {
            "job_id": job.id, "kind": job.kind, "status": status, "host_id": job.host_id,
            "request_id": job.request_id, "error": error, "error_code": error_code, "slo_met": sli["slo_met"],
            "total_s": sli.get("total_s")}, tenant_id=job.tenant_id)
    if job.request_id is not None:
        _settle_request(session, job.request_id, now)
    record_canary_outcome(session, job)  # no-op unless the job was an image canary (or a corrupt image)
    # Last: the totals' rows are shared by every settle, so hold their locks only until the commit.
    _tally(session, job, status, now, error_code)
    session.commit()
    return True


def _tally(session: Session, job: Job, status: str, now: datetime, error_code: str | None) -> None:
    # The restore verdict was written on the row by the phase that ran the test, not on this object.
    restore = session.exec(select(Job.restore_passed).where(Job.id == job.id)).one()
    facts = job_facts(kind=job.kind, status=status, accepted_at=job.accepted_at, finished_at=now, phases=job.phases,
                      restore_passed=restore)
    job_tally.add(session, job_tally.observations(facts, error_code, configured_slos(get_settings())))


def _move_host(session: Session, job: Job, host: Host, status: str, started: bool, error: str | None,
               actor: str, error_code: str | None) -> None:
    """The lifecycle says where the host goes; a move it forbids is recorded on the job, not skipped."""
    target = host_after_job(job.kind, status, host.driver, started, error_code)
    if target is None or host.state == target:
        return
    if not can_transition(host.state, target):
        note = (f"host {host.name} stayed {host.state}: the lifecycle does not allow {host.state} -> {target} "
                f"after a {job.kind} job {status}")
        session.execute(update(Job).where(col(Job.id) == job.id).values(error=f"{error}; {note}" if error else note))
        audit.record(session, actor_id=None, actor_name=actor, action="host.illegal_transition", object_type="host",
                     object_id=host.id, tenant_id=job.tenant_id, before={"state": host.state},
                     after={"refused": str(target), "job_id": job.id, "job_status": status})
        return
    extra: dict = {}
    if target in ("available", "retired"):
        extra = {"tenant_id": None, "request_id": None}
    cas_state(session, host.id or 0, host.state, target, **extra)
    audit.record(session, actor_id=None, actor_name=actor, action="host.state", object_type="host",
                 object_id=host.id, tenant_id=job.tenant_id, before={"state": host.state},
                 after={"state": str(target), "job_id": job.id, "job_status": status})


def _settle_request(session: Session, request_id: int, now: datetime) -> None:
    # Locked (PostgreSQL; SQLite has one writer anyway): the last two jobs of a request of several
    # hosts ending at once would otherwise each see the other still running, and the request would
    # stay provisioning/reimaging for good. The second waits here and then reads the first's end.
    req = session.exec(select(HostRequest).where(col(HostRequest.id) == request_id).with_for_update()
                       .execution_options(populate_existing=True)).first()
    if req is None:
        return
    jobs = session.exec(select(Job).where(Job.request_id == request_id)).all()
    if req.status == "provisioning":
        prov = [j for j in jobs if j.kind == "provision"]
        if all(j.status in ("succeeded", "failed", "cancelled") for j in prov):
            req.status = "ready" if all(j.status == "succeeded" for j in prov) else "failed"
            if req.status == "ready":
                req.ready_at = now
    elif req.status == "reimaging":
        _settle_reimage(session, req, jobs)
    elif req.status == "releasing":
        rel = [j for j in jobs if j.kind == "release"]
        if rel and all(j.status in ("succeeded", "failed", "cancelled") for j in rel):
            req.status = "released" if all(j.status == "succeeded" for j in rel) else "release_failed"
            req.released_at = now
    session.add(req)


def _settle_reimage(session: Session, req: HostRequest, jobs: Sequence[Job]) -> None:
    """Once every job of the request's reimage has ended: ready when all its hosts are active again
    (written and handed back, or cancelled before a job touched them), failed otherwise. The lease
    and ready_at stay: the customer keeps the hosts they had. A reimage none of whose jobs started
    wrote nothing: the request names its previous image again."""
    ours = [j for j in jobs if j.kind == "reimage"]
    if not ours:
        return
    last = max(ours, key=lambda j: j.id or 0)
    round_ = (last.params or {}).get("round")
    this_round = [j for j in ours if (j.params or {}).get("round") == round_]
    if any(j.status not in ("succeeded", "failed", "cancelled") for j in this_round):
        return
    states = session.exec(select(Host.state).where(Host.request_id == req.id)).all()
    before = {"status": req.status, "image": req.image}
    req.status = "ready" if states and all(st == "active" for st in states) else "failed"
    params = last.params or {}
    if ("previous_image" in params and req.image == params.get("image")
            and all(j.status == "cancelled" and j.started_at is None for j in this_round)):
        req.image = params["previous_image"]
    if req.image != before["image"]:
        audit.record(session, actor_id=None, actor_name="settle", action="request.reimage_aborted",
                     object_type="request", object_id=req.id, tenant_id=req.tenant_id, before=before,
                     after={"status": req.status, "image": req.image, "jobs": [j.id for j in this_round]})
