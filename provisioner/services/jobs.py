"""Creating jobs. Each new job is announced to the broker by the doorbell once the caller's
transaction commits (`provisioner.services.doorbell`): callers only commit."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from provisioner.core.pipeline import phases_for
from provisioner.core.timeutil import utcnow
from provisioner.services import doorbell
from provisioner.store.config import Settings, get_settings
from provisioner.store.models import Host, Job


def new_job(session: Session, kind: str, host: Host, *, request_id: int | None = None,
            tenant_id: int | None = None, accepted_at: datetime | None = None,
            settings: Settings | None = None, params: dict | None = None) -> Job:
    settings = settings or get_settings()
    phases_for(kind, host.driver)  # unknown kinds fail here, before anything is written
    now = utcnow()
    job = Job(kind=kind, host_id=host.id or 0, request_id=request_id, tenant_id=tenant_id,
              accepted_at=accepted_at or now, queued_at=now, enqueued_at=now,
              max_attempts=settings.max_attempts, slo_target_s=settings.slo_seconds(kind),
              params=params or {})
    session.add(job)
    session.flush()
    doorbell.ring_after_commit(session, [job.id or 0])
    return job
