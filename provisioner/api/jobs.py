"""Jobs: list, show (with phases and SLIs), events, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import update
from sqlmodel import Session, col, select

from provisioner.api.bounds import IdFilter, PathId, SeqQuery
from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.job_stream import resume_point, stream_events
from provisioner.api.pagination import Paging, page_meta
from provisioner.api.problems import Problem, not_found
from provisioner.api.schemas import EventOut, JobOut, Page
from provisioner.core.job_states import JobStatus, is_terminal
from provisioner.core.pipeline import JobKind
from provisioner.services import audit
from provisioner.services.settle import settle
from provisioner.store.column_ranges import INT_COLUMN_MAX
from provisioner.store.config import get_settings
from provisioner.store.models import Job, JobEvent

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def visible_job(s: Session, p: Principal, job_id: int) -> Job:
    j = s.get(Job, job_id)
    if j is None or not p.sees_tenant(j.tenant_id):
        raise not_found("job", job_id)
    return j


@router.get("", response_model=Page[JobOut], summary="List jobs, newest first")
def list_jobs(*, status: JobStatus | None = None, kind: JobKind | None = None,
              host_id: IdFilter = None, request_id: IdFilter = None,
              pg: Paging, p: Annotated[Principal, Depends(require("jobs:read"))],
              s: DbSession) -> dict:
    q = select(Job)
    if p.scoped:
        q = q.where(Job.tenant_id == p.tenant_id)
    for column, val in ((Job.status, status), (Job.kind, kind), (Job.host_id, host_id), (Job.request_id, request_id)):
        if val is not None:
            q = q.where(column == val)
    items = s.exec(q.order_by(col(Job.id).desc()).offset(pg.offset).limit(pg.limit)).all()
    return {"items": items, **page_meta(s, q, pg)}


@router.get("/{job_id}", response_model=JobOut, summary="Show a job with its phases and SLIs")
def get_job(job_id: PathId, p: Annotated[Principal, Depends(require("jobs:read"))], s: DbSession) -> Job:
    return visible_job(s, p, job_id)


@router.get("/{job_id}/events", response_model=Page[EventOut],
            summary="A job's events in order (page with after_seq; GET /v1/jobs/{id}/stream follows a running job)")
def job_events(*, job_id: PathId, after_seq: SeqQuery = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 200,
               p: Annotated[Principal, Depends(require("jobs:read"))], s: DbSession) -> dict:
    j = visible_job(s, p, job_id)
    items = s.exec(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after_seq)
                   .order_by(col(JobEvent.seq)).limit(limit)).all()
    return {"items": items, "total": j.event_count, "limit": limit, "offset": after_seq}


async def stream_start(job_id: PathId, p: Annotated[Principal, Depends(require("jobs:read"))], s: DbSession,
                       after_seq: Annotated[int, Query(ge=0, le=INT_COLUMN_MAX,
                                                       description="start after this event (first connect)")] = 0,
                       last_event_id: Annotated[str | None, Header(max_length=32,
                                                                   description="resume after this event")] = None,
                       ) -> int:
    # Checked before the stream starts: a refusal is still a problem document, not a broken stream.
    visible_job(s, p, job_id)
    return resume_point(last_event_id, after_seq)


@router.get("/{job_id}/stream", response_class=EventSourceResponse,
            summary="Follow a job live (Server-Sent Events); reconnect with Last-Event-ID to resume",
            description="`event: event` (id = the event's seq) for each stored event in order, `event: job` "
                        "when the job's status or phase changes, `event: end` with the final job, then the "
                        "stream closes. Resuming with `Last-Event-ID` (or `after_seq`) loses no event.")
async def stream_job(job_id: PathId, after: Annotated[int, Depends(stream_start)]) -> AsyncIterator[ServerSentEvent]:
    async for ev in stream_events(job_id, after, get_settings().sse_poll_seconds):
        yield ev


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut,
             summary="Cancel a job: the running phase is stopped within seconds, on the worker and on the host")
def cancel_job(job_id: PathId, p: Annotated[Principal, Depends(require("jobs:cancel"))],
               s: DbSession) -> Job:
    j = visible_job(s, p, job_id)
    if is_terminal(j.status):
        raise Problem(409, "job.finished", f"job {j.id} already ended ({j.status})",
                      hint="nothing to cancel", status_now=j.status)
    s.execute(update(Job).where(col(Job.id) == j.id).values(cancel_requested=True))
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="job.cancel", object_type="job",
                 object_id=j.id, tenant_id=j.tenant_id, before={"status": j.status},
                 after={"cancel_requested": True}, request_id=p.request_id)
    s.commit()
    s.refresh(j)
    if j.status == "queued":
        # Nobody runs it yet: end it here; a worker that claims it later finds it cancelled.
        settle(s, j, "cancelled", f"cancelled by {p.name} before it started", actor=p.name)
        s.refresh(j)
    return j
