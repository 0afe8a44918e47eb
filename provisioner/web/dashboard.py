"""The web dashboard: HTML views of what the API shows a user (their jobs with phases and SLIs, SLO
attainment, hosts and compliance), for customers and operators in a browser, and the customer's
forms (request, release, extend, rate: request_pages.py and the job page's rating form).

Sign-in opens a server-side session (sessions.py: the cookie holds a random session id, never the
API token); every page reads and writes through the API's own functions, so tenant scoping,
permissions, guardrails and audit entries are the API's. Every form carries the session's CSRF token.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

from cachetools import TTLCache
from fastapi import APIRouter, Depends, Form, Header, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlmodel import col, select

from provisioner.api import compliance, hosts, jobs, requests
from provisioner.api.bounds import PathId
from provisioner.api.deps import DbSession, Principal
from provisioner.api.job_stream import resume_point, stream_events
from provisioner.api.pagination import PageParams
from provisioner.api.problems import Problem
from provisioner.core.errors import DomainError
from provisioner.core.job_states import is_terminal
from provisioner.core.permissions import allowed
from provisioner.core.sli import slo_summary
from provisioner.services import ratings
from provisioner.services.slo_report import slo_report, status_document
from provisioner.store.config import get_settings
from provisioner.store.models import HostRequest, Job, JobEvent
from provisioner.store.notify_models import Rating
from provisioner.web import request_pages, sessions
from provisioner.web.pages import page
from provisioner.web.sessions import form_principal, ui_principal

router = APIRouter(prefix="/ui", include_in_schema=False)

SLO_CACHE_SECONDS = 30
_slo_cache: TTLCache[tuple[str, int | None], list[dict[str, Any]]] = TTLCache(maxsize=1024, ttl=SLO_CACHE_SECONDS)
_slo_lock = threading.Lock()
# How many of the newest finished provision jobs the SLO card judges.
SLO_WINDOW = 200


def install(app: Any) -> None:
    app.include_router(router)
    app.include_router(sessions.router)
    app.include_router(request_pages.router)
    sessions.install_handlers(app)


@router.get("", response_class=HTMLResponse)
def overview(request: Request, p: Annotated[Principal, Depends(ui_principal)], s: DbSession) -> Response:
    ctx: dict[str, Any] = {}
    if allowed(p.role, "jobs:read"):
        ctx["recent"] = jobs.list_jobs(pg=PageParams(25, 0), p=p, s=s)
        q = select(Job.sli, Job.slo_met).where(Job.kind == "provision", col(Job.slo_met).is_not(None))
        if p.scoped:
            q = q.where(Job.tenant_id == p.tenant_id)
        rows = s.exec(q.order_by(col(Job.id).desc()).limit(SLO_WINDOW)).all()
        ctx["slo"] = slo_summary(((sli or {}).get("total_s"), met) for sli, met in rows)
        report = _slo_documents(s, p.tenant_id if p.scoped else None)
        ctx["budget"] = next((d for d in report if d["name"] == "provision-handover"), None)
        if allowed(p.role, "reports:read"):
            ctx["slos"] = report
    if allowed(p.role, "hosts:read"):
        ctx["compliance"] = compliance.summary(p, s)
    if allowed(p.role, "escalations:read"):
        # Open until answered: operators see them here on every visit.
        ctx["escalations"] = s.exec(select(Rating).where(Rating.escalation == "open")
                                    .order_by(col(Rating.id)).limit(100)).all()
    return page(request, "overview.html", p, **ctx)


def _slo_documents(s: DbSession, tenant_id: int | None) -> list[dict[str, Any]]:
    """The error budgets as the API reports them, over the jobs this user may see. Remembered for
    SLO_CACHE_SECONDS per tenant: 28 days of a large fleet's jobs take a good part of a second to
    judge, and a 28-day budget does not move within a minute."""
    key = (str(s.get_bind().engine.url), tenant_id)
    with _slo_lock:
        hit = _slo_cache.get(key)
    if hit is None:
        hit = [status_document(st) for st in slo_report(s, tenant_id=tenant_id)]
        with _slo_lock:
            _slo_cache[key] = hit
    return hit


@router.get("/hosts", response_class=HTMLResponse)
def host_list(request: Request, p: Annotated[Principal, Depends(ui_principal)], s: DbSession) -> Response:
    if not allowed(p.role, "hosts:read"):
        return page(request, "error.html", p, status=403, message="Your role may not read hosts.")
    listing = hosts.list_hosts(pg=PageParams(500, 0), p=p, s=s)
    return page(request, "hosts.html", p, listing=listing)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_detail(request: Request, job_id: PathId, p: Annotated[Principal, Depends(ui_principal)],
               s: DbSession, note: Annotated[str, Query(max_length=2000)] = "") -> Response:
    try:
        if not allowed(p.role, "jobs:read"):
            raise Problem(403, "auth.forbidden", "Your role may not read jobs.")
        job = jobs.visible_job(s, p, job_id)
    except Problem as exc:
        return page(request, "error.html", p, status=exc.status, message=exc.detail)
    events = list(reversed(s.exec(select(JobEvent).where(JobEvent.job_id == job_id)
                                  .order_by(col(JobEvent.seq).desc()).limit(50)).all()))
    longest = max([ph.get("duration_s") or 0 for ph in job.phases or []] + [1])
    rating = ratings.for_request(s, job.request_id) if job.request_id else None
    req = s.get(HostRequest, job.request_id) if job.request_id else None
    rateable = (req is not None and rating is None and allowed(p.role, "ratings:write") and job.kind == "provision"
                and req.status in ratings.RATEABLE and req.ready_at is not None)
    return page(request, "job.html", p, job=job, events=events, longest=longest, running=not is_terminal(job.status),
                last_seq=events[-1].seq if events else 0, rating=rating, rateable=rateable,
                note=note)


@router.post("/requests/{request_id}/rate")
def rate_request(request: Request, request_id: int, p: Annotated[Principal, Depends(form_principal)], s: DbSession,
                 job_id: Annotated[int, Form(ge=1)], score: Annotated[int, Form(ge=1, le=5)],
                 comment: Annotated[str, Form(max_length=ratings.MAX_COMMENT)] = "") -> Response:
    """The job page's rating form. Refusals come back as a note on the job page."""
    back = f"/ui/jobs/{job_id}"
    try:
        if not allowed(p.role, "ratings:write"):
            raise Problem(403, "auth.forbidden", "Your role may not rate requests.")
        req = requests.visible_request(s, p, request_id)
        ratings.rate(s, req, score=score, comment=comment, user_id=p.user_id, actor_name=p.name,
                     request_id=p.request_id)
    except (Problem, DomainError) as exc:
        return RedirectResponse(back + "?" + urlencode({"note": exc.detail[:2000]}), status_code=303)
    return RedirectResponse(back, status_code=303)


async def ui_stream_start(job_id: int, request: Request, s: DbSession,
                          after_seq: Annotated[int, Query(ge=0)] = 0,
                          last_event_id: Annotated[str | None, Header()] = None) -> int:
    p = await ui_principal(request)
    if not allowed(p.role, "jobs:read"):
        raise Problem(403, "auth.forbidden", "Your role may not read jobs.", hint="ask an admin")
    jobs.visible_job(s, p, job_id)
    return resume_point(last_event_id, after_seq)


@router.get("/jobs/{job_id}/stream", response_class=EventSourceResponse)
async def job_stream(job_id: int, after: Annotated[int, Depends(ui_stream_start)]) -> AsyncIterator[ServerSentEvent]:
    """The job page's live feed: the API's job stream, signed in with the dashboard cookie (EventSource
    sends cookies, not an Authorization header)."""
    async for ev in stream_events(job_id, after, get_settings().sse_poll_seconds):
        yield ev
