"""Creating jobs and ringing the doorbell after the transaction commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session

from provisioner.config import Settings, get_settings
from provisioner.db import get_engine
from provisioner.models import Host, Job
from provisioner.pipeline import phases_for
from provisioner.timeutil import utcnow


def new_job(session: Session, kind: str, host: Host, *, request_id: int | None = None,
            tenant_id: int | None = None, accepted_at: datetime | None = None,
            settings: Settings | None = None, params: dict | None = None) -> Job:
    settings = settings or get_settings()
    phases_for(kind)  # unknown kinds fail here, before anything is written
    now = utcnow()
    job = Job(kind=kind, host_id=host.id or 0, request_id=request_id, tenant_id=tenant_id,
              accepted_at=accepted_at or now, queued_at=now, enqueued_at=now,
              max_attempts=settings.max_attempts, slo_target_s=settings.slo_seconds(kind),
              params=params or {})
    session.add(job)
    session.flush()
    return job


def enqueue_after_commit(job_ids: list[int], settings: Settings | None = None) -> None:
    """Sends after commit; a job whose message could not be sent is marked for the reconciler."""
    from workers.actors import enqueue

    failed = enqueue(job_ids)
    if failed:
        with get_engine(settings).begin() as conn:
            conn.execute(update(Job).where(Job.id.in_(failed)).values(enqueued_at=None))  # type: ignore[union-attr]
