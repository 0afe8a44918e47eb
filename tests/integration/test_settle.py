"""Settling a job: where the host goes is the lifecycle's rule, and a move the lifecycle forbids is
written on the job and audited, never skipped silently."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from provisioner.core.timeutil import utcnow
from provisioner.services.settle import settle
from provisioner.store.migrate import upgrade
from provisioner.store.models import AuditEntry, Host, Job


@pytest.fixture
def engine(bare_engine: Engine) -> Iterator[Engine]:
    upgrade(bare_engine)
    yield bare_engine


def _job(s: Session, host_state: str, kind: str) -> tuple[int, int]:
    h = Host(name=f"h-{host_state}-{kind}", address="192.0.2.1", state=host_state)
    s.add(h)
    s.flush()
    j = Job(kind=kind, host_id=h.id or 0, status="running", started_at=utcnow(), worker_id="w")
    s.add(j)
    s.commit()
    return h.id or 0, j.id or 0


def test_lifecycle_moves_the_host(engine: Engine) -> None:
    with Session(engine) as s:
        host_id, job_id = _job(s, "releasing", "release")
        job = s.get(Job, job_id)
        assert job is not None and settle(s, job, "succeeded", error_code=None)
    with Session(engine) as s:
        host = s.get(Host, host_id)
        assert host is not None and host.state == "available"
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "host.state")).one()
        assert entry.after is not None and entry.after["state"] == "available" and entry.after["job_id"] == job_id


def test_forbidden_move_is_recorded_on_the_job(engine: Engine) -> None:
    with Session(engine) as s:
        # An operator put the host in maintenance by hand while nothing should have run on it.
        host_id, job_id = _job(s, "maintenance", "release")
        job = s.get(Job, job_id)
        assert job is not None and settle(s, job, "failed", "phase release failed: boom", error_code="phase_failed")
    with Session(engine) as s:
        host, job = s.get(Host, host_id), s.get(Job, job_id)
        assert host is not None and job is not None
        assert host.state == "maintenance"
        assert job.status == "failed" and job.error_code == "phase_failed"
        assert job.error is not None and job.error.startswith("phase release failed: boom; ")
        assert "stayed maintenance" in job.error and "maintenance -> failed" in job.error
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "host.illegal_transition")).one()
        assert entry.after == {"refused": "failed", "job_id": job_id, "job_status": "failed"}
