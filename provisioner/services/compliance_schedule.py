"""Which active hosts are due a compliance check, and queuing those checks as jobs."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from provisioner.core.compliance import is_due
from provisioner.services.jobs import new_job
from provisioner.store.config import Settings
from provisioner.store.models import Host, Job


def queue_check(session: Session, host: Host, settings: Settings | None = None) -> Job:
    return new_job(session, "compliance", host, request_id=host.request_id, tenant_id=host.tenant_id,
                   settings=settings)


def schedule_due(session: Session, settings: Settings, now: datetime, limit: int = 100) -> list[int]:
    busy = set(session.exec(select(Job.host_id).where(Job.kind == "compliance",
                                                      col(Job.status).in_(["queued", "running"]))).all())
    jobs = []
    for host in session.exec(select(Host).where(Host.state == "active").limit(1000)).all():
        if host.id in busy or not is_due(host.compliance, host.updated_at, now, settings.compliance_interval_seconds):
            continue
        jobs.append(queue_check(session, host, settings).id or 0)
        if len(jobs) >= limit:
            break
    session.commit()
    return jobs
