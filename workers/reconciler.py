"""The reconciler: the database is the truth, the broker only a doorbell.

Periodically: re-send queued jobs whose message may be lost; settle running jobs whose claim
expired (their worker died): retry when the interrupted phase is idempotent and attempts remain,
otherwise fail with the reason. Remove the private data dirs (with the secrets a phase was given)
that workers on this machine left behind when they died (`workers/private_dirs.py`).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import cast

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from provisioner.core.pipeline import phases_for
from provisioner.core.timeutil import utcnow
from provisioner.services import audit, doorbell
from provisioner.services.compliance_schedule import schedule_due
from provisioner.services.settle import settle
from provisioner.store.config import Settings
from provisioner.store.db import get_engine
from provisioner.store.models import Job
from workers import private_dirs
from workers.leases import expire_leases
from workers.periodic import PeriodicLoop

log = logging.getLogger("provisioner.reconciler")


def _interrupted_phase_idempotent(job: Job) -> bool:
    running = [p["name"] for p in job.phases or [] if p.get("status") == "running"]
    by_name = {p.name: p for d in ("static", "vagrant") for p in phases_for(job.kind, d)}
    return all(by_name[n].idempotent for n in running if n in by_name)


def reconcile_once(settings: Settings) -> dict[str, int]:
    now = utcnow()
    counts: dict[str, int] = {"requeued": 0, "retried": 0, "failed": 0}
    with Session(get_engine(settings), expire_on_commit=False) as session:
        stale = now - timedelta(seconds=settings.requeue_after_seconds)
        queued = session.exec(
            select(Job.id).where(Job.status == "queued",
                                 or_(col(Job.enqueued_at).is_(None), col(Job.enqueued_at) < stale))
            .limit(500)
        ).all()
        if queued:
            session.execute(update(Job).where(col(Job.id).in_(queued)).values(enqueued_at=now))
            session.commit()
            doorbell.ring(cast(list[int], list(queued)), mark_with=session)  # ids of stored rows are never None
            counts["requeued"] = len(queued)
        expired = session.exec(
            select(Job).where(Job.status == "running", col(Job.claim_until) < now).limit(100)
        ).all()
        for job in expired:
            reason = (f"worker {job.worker_id} stopped renewing its lease (expired {job.claim_until}Z) "
                      f"during phase {job.current_phase or '?'}, attempt {job.attempts}/{job.max_attempts}")
            if job.attempts < job.max_attempts and _interrupted_phase_idempotent(job) and not job.cancel_requested:
                phases = [dict(p, status="interrupted") if p.get("status") == "running" else p
                          for p in job.phases or []]
                res = session.exec(
                    update(Job).where(col(Job.id) == job.id, col(Job.status) == "running",
                                      col(Job.claim_until) == job.claim_until)
                    .values(status="queued", worker_id=None, claim_until=None, phases=phases,
                            enqueued_at=now, error=f"retrying: {reason}")
                )
                if res.rowcount == 1:
                    audit.record(session, actor_id=None, actor_name="reconciler", action="job.retry",
                                 object_type="job", object_id=job.id, tenant_id=job.tenant_id,
                                 after={"reason": reason})
                    session.commit()
                    doorbell.ring([job.id or 0], mark_with=session)
                    counts["retried"] += 1
                else:
                    session.rollback()
            else:
                status = "cancelled" if job.cancel_requested else "failed"
                if settle(session, job, status, reason, actor="reconciler"):
                    counts["failed"] += 1
        for k, v in expire_leases(settings, now=now).items():
            counts[f"lease_{k}"] = v
        due = schedule_due(session, settings, now)  # committed there; the doorbell announces them
        if due:
            counts["compliance_checks"] = len(due)
    swept = private_dirs.sweep_stale(settings)
    if swept:
        counts["stale_private_dirs"] = len(swept)
    if any(counts.values()):
        log.info("reconciled: %s", counts)
    return counts


class Reconciler(PeriodicLoop):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__("reconciler", settings.reconcile_seconds, lambda: reconcile_once(settings), log=log)
