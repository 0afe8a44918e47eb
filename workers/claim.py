"""A worker's claim on a job: a compare-and-set (queued -> running) with an expiry that a
heartbeat thread renews. A worker that dies stops renewing; the reconciler then settles or
retries the job. The heartbeat also carries cancel requests to the running phase."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlmodel import Session, col

from provisioner.core.timeutil import utcnow
from provisioner.services import audit, doorbell
from provisioner.store.config import Settings
from provisioner.store.db import get_engine
from provisioner.store.models import Job
from workers.shutdown import DRAINING

log = logging.getLogger("provisioner.claim")


def claim(session: Session, job_id: int, worker_id: str, claim_s: float) -> bool:
    now = utcnow()
    res = session.exec(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status) == "queued", col(Job.cancel_requested).is_(False))
        .values(status="running", worker_id=worker_id, attempts=Job.attempts + 1,
                claim_until=now + timedelta(seconds=claim_s))
    )
    session.commit()
    return res.rowcount == 1


def hand_back(session: Session, job: Job, worker_id: str, reason: str) -> bool:
    """Give a claimed job back to the queue (this worker is stopping); the attempt is not counted:
    nothing failed. Returns False when the claim was no longer ours (the reconciler moved it)."""
    phases = [dict(p, status="interrupted") if p.get("status") in ("running", "cancelled") else p
              for p in job.phases or []]
    res = session.exec(
        update(Job)
        .where(col(Job.id) == job.id, col(Job.status) == "running", col(Job.worker_id) == worker_id)
        .values(status="queued", worker_id=None, claim_until=None, phases=phases, current_phase=None,
                attempts=Job.attempts - 1, enqueued_at=utcnow(), error=f"handed back: {reason}")
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        session.rollback()
        return False
    audit.record(session, actor_id=None, actor_name=worker_id, action="job.handback", object_type="job",
                 object_id=job.id, tenant_id=job.tenant_id, after={"reason": reason})
    session.commit()
    doorbell.ring([job.id or 0], mark_with=session)
    return True


class Heartbeat:
    """Renews the claim and watches for cancel requests; notices when the claim was lost."""

    def __init__(self, settings: Settings, job_id: int, worker_id: str) -> None:
        self.settings = settings
        self.job_id = job_id
        self.worker_id = worker_id
        self.cancel = threading.Event()
        self.lost = threading.Event()
        # Whether the running phase may be stopped for a hand-back (idempotent: running it again is safe).
        self.interruptible = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        engine = get_engine(self.settings)
        last_renew = 0.0
        while not self._stop.wait(0.5):
            try:
                with engine.begin() as conn:
                    if time.monotonic() - last_renew >= self.settings.heartbeat_seconds:
                        res = conn.execute(
                            update(Job)
                            .where(col(Job.id) == self.job_id, col(Job.status) == "running",
                                   col(Job.worker_id) == self.worker_id)
                            .values(claim_until=utcnow() + timedelta(seconds=self.settings.claim_seconds))
                        )
                        last_renew = time.monotonic()
                        if res.rowcount != 1:
                            self.lost.set()
                            return
                    row = conn.execute(
                        sa_select(col(Job.cancel_requested)).where(col(Job.id) == self.job_id)
                    ).first()
                    if row and row[0]:
                        self.cancel.set()
            except Exception:  # a DB blip must not kill the heartbeat; the claim has slack
                log.exception("heartbeat for job %s failed", self.job_id)

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set() or (DRAINING.is_set() and self.interruptible)
