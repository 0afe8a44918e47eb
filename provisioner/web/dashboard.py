"""The web dashboard: read-only HTML views of what the API shows a user (their jobs with phases and
SLIs, SLO attainment, hosts and compliance), for customers and operators in a browser.

Sign-in is the user's API token, pasted once and kept in an HttpOnly, SameSite=Strict cookie scoped
to /ui; every page resolves it exactly like the API's bearer header (same cache, same checks) and
reads through the API's own functions, so tenant scoping and permissions are the API's. Pages never
change anything, so a forged cross-site link can do no harm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import col, select

from provisioner.api import compliance, hosts, jobs
from provisioner.api.bounds import PathId
from provisioner.api.deps import DbSession, Principal, principal_for_token
from provisioner.api.pagination import PageParams
from provisioner.api.problems import Problem
from provisioner.core.job_states import is_terminal
from provisioner.core.permissions import allowed
from provisioner.core.sli import slo_summary
from provisioner.core.timeutil import iso
from provisioner.store.models import Job, JobEvent

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["iso"] = iso
templates.env.filters["secs"] = lambda v: "-" if v is None else f"{v:,.1f} s"

COOKIE = "prov_token"
# How many of the newest finished provision jobs the SLO card judges.
SLO_WINDOW = 200


class SignInRequired(Exception):
    def __init__(self, reason: str = "") -> None:
        self.reason = reason


def install(app: Any) -> None:
    app.include_router(router)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        resp = RedirectResponse("/ui/login" + (f"?reason={exc.reason}" if exc.reason else ""), status_code=303)
        if exc.reason:
            resp.delete_cookie(COOKIE, path="/ui")
        return resp


async def ui_principal(request: Request) -> Principal:
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired()
    try:
        return await principal_for_token(request, token)
    except Problem:
        raise SignInRequired("expired") from None


def page(request: Request, name: str, p: Principal | None, status: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"me": p, **ctx}, status_code=status)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, reason: str = "") -> HTMLResponse:
    note = "Your token was revoked or has expired: sign in again." if reason == "expired" else ""
    return page(request, "login.html", None, note=note)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, token: Annotated[str, Form(max_length=512)] = "") -> Response:
    try:
        await principal_for_token(request, token)
    except Problem as exc:
        return page(request, "login.html", None, status=401, note=f"Not signed in: {exc.detail}.")
    resp = RedirectResponse("/ui", status_code=303)
    resp.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", path="/ui",
                    secure=request.url.scheme == "https", max_age=12 * 3600)
    return resp


@router.post("/logout")
def logout() -> Response:
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/ui")
    return resp


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
    if allowed(p.role, "hosts:read"):
        ctx["compliance"] = compliance.summary(p, s)
    return page(request, "overview.html", p, **ctx)


@router.get("/hosts", response_class=HTMLResponse)
def host_list(request: Request, p: Annotated[Principal, Depends(ui_principal)], s: DbSession) -> Response:
    if not allowed(p.role, "hosts:read"):
        return page(request, "error.html", p, status=403, message="Your role may not read hosts.")
    listing = hosts.list_hosts(pg=PageParams(500, 0), p=p, s=s)
    return page(request, "hosts.html", p, listing=listing)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_detail(request: Request, job_id: PathId, p: Annotated[Principal, Depends(ui_principal)],
               s: DbSession) -> Response:
    try:
        if not allowed(p.role, "jobs:read"):
            raise Problem(403, "auth.forbidden", "Your role may not read jobs.")
        job = jobs.visible_job(s, p, job_id)
    except Problem as exc:
        return page(request, "error.html", p, status=exc.status, message=exc.detail)
    events = list(reversed(s.exec(select(JobEvent).where(JobEvent.job_id == job_id)
                                  .order_by(col(JobEvent.seq).desc()).limit(50)).all()))
    longest = max([ph.get("duration_s") or 0 for ph in job.phases or []] + [1])
    return page(request, "job.html", p, job=job, events=events, longest=longest, running=not is_terminal(job.status))
