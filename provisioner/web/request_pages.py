"""The customer's request pages: ask for hosts (a form with what POST /v1/requests takes), see a
request with its jobs, hosts and lease, reimage it, release it and extend its lease.

Each form calls the API operation itself (the same validation, guardrails, quota, audit entry and
commit), so a refusal reads on the page exactly as the API words it (detail, hint, every violated
guardrail with its remedy) instead of an error status without a page. Every form is CSRF-checked
(sessions.form_principal).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import col, select

from provisioner.api import leases, requests
from provisioner.api.bounds import PathId
from provisioner.api.deps import DbSession, Principal
from provisioner.api.guardrail_schemas import ExtendIn
from provisioner.api.pagination import PageParams
from provisioner.api.problems import Problem, problem_for
from provisioner.api.schemas import ReimageIn, RequestIn
from provisioner.core.errors import DomainError
from provisioner.core.permissions import allowed
from provisioner.services import ratings
from provisioner.store.models import Job
from provisioner.web.pages import page
from provisioner.web.sessions import form_principal, ui_principal

router = APIRouter(prefix="/ui/requests", include_in_schema=False)

FIELDS = ("image", "pool", "count", "min_cpus", "min_memory_mb", "min_disks", "labels", "lease_hours",
          "raid_level", "ssh_public_key")
MAX_FIELD = 16_384


async def form_fields(request: Request) -> dict[str, str]:
    """The posted form's text fields this page knows (files and unknown names are ignored)."""
    form = await request.form()
    return {k: v[:MAX_FIELD] for k in FIELDS if isinstance(v := form.get(k), str)}


class FormError(Exception):
    def __init__(self, messages: list[str]) -> None:
        self.messages = messages


def request_body(f: dict[str, str]) -> RequestIn:
    """The form as the API's request body; FormError lists what is wrong, field by field."""
    labels: dict[str, str] = {}
    errors: list[str] = []
    for n, line in enumerate(f.get("labels", "").splitlines(), 1):
        if line.strip():
            key, eq, value = line.partition("=")
            if not eq:
                errors.append(f"labels, line {n}: write key=value")
            labels[key.strip()] = value.strip()
    # An empty image field: no image, the hosts keep their installed OS.
    body: dict[str, Any] = {"image": f.get("image") or None, "pool": f.get("pool") or "default",
                            "ssh_public_key": f.get("ssh_public_key", ""),
                            "constraints": {"labels": labels} | {k: f[k] for k in ("min_cpus", "min_memory_mb",
                                                                                  "min_disks") if f.get(k)}}
    body |= {k: f[k] for k in ("count", "lease_hours", "raid_level") if f.get(k)}
    try:
        parsed = RequestIn.model_validate(body)
    except ValidationError as exc:
        errors += [f"{'.'.join(str(x) for x in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()]
    if errors:
        raise FormError(errors)
    return parsed


def _refusal(exc: Problem | DomainError) -> Problem:
    return exc if isinstance(exc, Problem) else problem_for(exc)


@router.get("", response_class=HTMLResponse)
def request_list(request: Request, p: Annotated[Principal, Depends(ui_principal)], s: DbSession) -> Response:
    listing = requests.list_requests(status=None, pg=PageParams(100, 0), p=p, s=s)
    return page(request, "requests.html", p, listing=listing, can_create=allowed(p.role, "requests:create"))


@router.get("/new", response_class=HTMLResponse)
def request_form(request: Request, p: Annotated[Principal, Depends(ui_principal)]) -> Response:
    if not allowed(p.role, "requests:create"):
        return page(request, "error.html", p, status=403, message="Your role may not request hosts.")
    return page(request, "request_new.html", p, values={"pool": "default", "count": "1"})


@router.post("", response_class=HTMLResponse)
def create_request(request: Request, p: Annotated[Principal, Depends(form_principal)],
                   f: Annotated[dict[str, str], Depends(form_fields)], s: DbSession) -> Response:
    """The request form: POST /v1/requests itself. Success goes to the job page (live progress)."""
    try:
        if not allowed(p.role, "requests:create"):
            raise Problem(403, "auth.forbidden", "Your role may not request hosts.")
        out = requests.create_request(request_body(f), p, s)
    except FormError as exc:
        return page(request, "request_new.html", p, status=422, values=f, errors=exc.messages)
    except (Problem, DomainError) as exc:
        s.rollback()
        return page(request, "request_new.html", p, status=_refusal(exc).status, values=f, problem=_refusal(exc))
    target = f"/ui/jobs/{out.job_ids[0]}" if len(out.job_ids) == 1 else f"/ui/requests/{out.id}"
    return RedirectResponse(target, status_code=303)


@router.get("/{request_id}", response_class=HTMLResponse)
def request_detail(request: Request, request_id: PathId, p: Annotated[Principal, Depends(ui_principal)],
                   s: DbSession, note: Annotated[str, Query(max_length=2000)] = "",
                   done: Annotated[str, Query(max_length=500)] = "") -> Response:
    """A request: status, lease, jobs; the release and extend forms. `note`/`done`: what a form's
    redirect says (a refusal, or what was done)."""
    try:
        req = requests.visible_request(s, p, request_id)
    except Problem as exc:
        return page(request, "error.html", p, status=exc.status, message=exc.detail)
    job_rows = s.exec(select(Job).where(Job.request_id == req.id).order_by(col(Job.id))).all()
    return page(request, "request.html", p, req=req, jobs=job_rows, rating=ratings.for_request(s, req.id or 0),
                may_release=allowed(p.role, "requests:release"), may_reimage=allowed(p.role, "requests:reimage"),
                note=note, done=done)


def _back(request_id: int, **q: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/requests/{request_id}" + ("?" + urlencode(q) if q else ""), status_code=303)


@router.post("/{request_id}/release")
def release(request_id: PathId, p: Annotated[Principal, Depends(form_principal)], s: DbSession) -> Response:
    """POST /v1/requests/{id}/release from the request page."""
    try:
        if not allowed(p.role, "requests:release"):
            raise Problem(403, "auth.forbidden", "Your role may not release hosts.")
        out = requests.release_request(request_id, p, s)
    except (Problem, DomainError) as exc:
        return _refused(request_id, _refusal(exc))
    return _back(request_id, done=f"Release started: the request is {out.status}.")


async def reimage_fields(request: Request) -> dict[str, Any]:
    form = await request.form()
    image = form.get("image")
    # An unticked checkbox is absent from the form: keep the data only when it is ticked.
    return {"image": image[:MAX_FIELD] if isinstance(image, str) else "", "keep_data": form.get("keep_data") == "on"}


@router.post("/{request_id}/reimage")
def reimage(request_id: PathId, p: Annotated[Principal, Depends(form_principal)],
            fields: Annotated[dict[str, Any], Depends(reimage_fields)], s: DbSession) -> Response:
    """POST /v1/requests/{id}/reimage from the request page."""
    try:
        if not allowed(p.role, "requests:reimage"):
            raise Problem(403, "auth.forbidden", "Your role may not reimage hosts.")
        try:
            body = ReimageIn.model_validate(fields)
        except ValidationError:
            raise Problem(422, "request.invalid", f"{fields['image'][:200]!r} is not an image name") from None
        out = requests.reimage(request_id, body, p, s)
    except (Problem, DomainError) as exc:
        s.rollback()
        return _refused(request_id, _refusal(exc))
    kept = "keeping the data array" if body.keep_data else "wiping every disk"
    return _back(request_id, done=f"Reimage to {out.image} started ({kept}): the request is {out.status}.")


async def hours_field(request: Request) -> str:
    hours = (await request.form()).get("hours")
    return hours[:32] if isinstance(hours, str) else ""


@router.post("/{request_id}/extend")
def extend(request_id: PathId, p: Annotated[Principal, Depends(form_principal)],
           hours: Annotated[str, Depends(hours_field)], s: DbSession) -> Response:
    """POST /v1/requests/{id}/extend from the request page (the lease policy decides how far)."""
    try:
        if not allowed(p.role, "requests:release"):
            raise Problem(403, "auth.forbidden", "Your role may not extend leases.")
        try:
            body = ExtendIn.model_validate({"hours": hours})
        except ValidationError:
            raise Problem(422, "request.invalid", f"{hours!r} is not a number of hours") from None
        out = leases.extend_lease(request_id, body, p, s)
    except (Problem, DomainError) as exc:
        return _refused(request_id, _refusal(exc))
    return _back(request_id, done=f"Lease extended by {body.hours} h (extension {out.extensions_used} of "
                                  f"{out.max_extensions}).")


def _refused(request_id: int, problem: Problem) -> Response:
    if problem.status == 404:
        return _back(request_id)  # the detail page says "not found" itself
    text = (problem.detail + (f" ({problem.hint})" if problem.hint else ""))[:2000]
    return _back(request_id, note=text)
