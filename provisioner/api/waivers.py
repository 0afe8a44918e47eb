"""Waivers: ask for an exception to one guardrail code, have someone else decide it.

Rules
-----
* Asking (waivers:request): customers and imagers for their own tenant ("tenant:<their tenant>")
  or a host/request of their tenant; operators and admins for any existing scope (e.g. a host
  whose RAID is degraded while a disk is on order). Auditors only read.
* Deciding (waivers:decide): operators and admins, and the approver's role must also be in
  `policy.waiver_approver_roles`. Nobody approves a waiver they asked for (four eyes):
  403 "waiver.self_approval". Rejecting one's own request (withdrawing it) is allowed.
* The code must exist and be waivable, the justification substantial (policy), the scope
  well-formed, existing and the asker's; otherwise 422 "waiver.invalid" listing every violation.
* Approval needs `expires_at`, in the future and at most `policy.waiver_max_days` ahead (422).
* Lifecycle: requested -> approved | rejected, approved -> revoked; any other step is 409
  "waiver.not_pending" / "waiver.not_approved". Decisions are compare-and-set, so two deciders
  can't both win. Every step is audited in the same transaction ("waiver.request", ".approve",
  ".reject", ".revoke").
* Admission honours only tenant-scoped waivers (see provisioner.services.admission).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import update
from sqlmodel import Session, col, select

from provisioner.api.bounds import PathId
from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.guardrail_schemas import WaiverDecisionIn, WaiverIn, WaiverNoteIn, WaiverOut
from provisioner.api.pagination import Paging, page_meta
from provisioner.api.problems import Problem, not_found
from provisioner.api.schemas import Page
from provisioner.core import guardrails
from provisioner.core.timeutil import as_utc, iso, utcnow
from provisioner.services import audit
from provisioner.services.admission import load_policy
from provisioner.store.guardrail_models import Waiver
from provisioner.store.models import Host, HostRequest, Tenant, User

router = APIRouter(prefix="/v1/waivers", tags=["guardrails"])

AUTH_CODES = ("waiver.self_approval", "waiver.approver_not_authorized")


def waiver_out(w: Waiver, now: datetime | None = None) -> WaiverOut:
    out = WaiverOut.model_validate(w)
    now = now or utcnow()
    out.active = w.status == "approved" and w.expires_at is not None and as_utc(w.expires_at) > as_utc(now)
    return out


def invalid(violations: list[guardrails.Violation], what: str) -> Problem:
    return Problem(422, "waiver.invalid",
                   f"{what}: " + "; ".join(v.message for v in violations),
                   hint="; ".join(dict.fromkeys(v.remedy for v in violations))
                   + " (GET /v1/policy lists every code and whether it is waivable)",
                   violations=[v.to_dict() for v in violations], codes=[v.code for v in violations])


def visible_waiver(s: Session, p: Principal, waiver_id: int) -> Waiver:
    w = s.get(Waiver, waiver_id)
    if w is None or not p.sees_tenant(w.tenant_id):
        raise not_found("waiver", waiver_id)
    return w


def resolve_scope(s: Session, p: Principal, scope: str) -> int | None:
    """The tenant owning the scope; 422 when it does not exist or is not the asker's to waive."""
    kind, _, ident = scope.partition(":")
    unknown = Problem(422, "waiver.scope_unknown", f"scope {scope!r} does not exist or is not yours to waive",
                      hint="use tenant:<your tenant>, or host:<id> / request:<id> of a host or request you "
                      "can see (GET /v1/hosts, GET /v1/requests)")
    owner: int | None
    if kind == "tenant":
        tenant = s.exec(select(Tenant).where(Tenant.name == ident)).first()
        if tenant is None:
            raise unknown
        owner = tenant.id
    else:
        if not ident.isdigit():
            raise Problem(422, "waiver.scope_invalid", f"{kind} id {ident!r} in scope {scope!r} is not a number",
                          hint=f"use e.g. {kind}:42")
        row: Host | HostRequest | None = s.get(Host, int(ident)) if kind == "host" else s.get(HostRequest, int(ident))
        if row is None:
            raise unknown
        owner = row.tenant_id
    if p.scoped and (owner is None or owner != p.tenant_id):
        raise unknown
    return owner


@router.post("", status_code=201, response_model=WaiverOut,
             summary="Ask for a waiver of one guardrail code for a scope (tenant:<name>, host:<id>, request:<id>)")
def request_waiver(body: WaiverIn, p: Annotated[Principal, Depends(require("waivers:request"))],
                   s: DbSession) -> WaiverOut:
    now = utcnow()
    policy = load_policy(s)
    problems = [v for v in guardrails.validate_waiver_request(
        code=body.code, justification=body.justification, expires_at=None, now=now,
        asker=guardrails.Actor(p.name, str(p.role)), policy=policy, scope=body.scope)
        if v.code != "waiver.expiry_missing"]  # the expiry is set by the approver
    if problems:
        raise invalid(problems, "the waiver request is invalid")
    tenant_id = resolve_scope(s, p, body.scope)
    w = Waiver(code=body.code, scope=body.scope, tenant_id=tenant_id, justification=body.justification,
               requested_by=p.user_id, status="requested", created_at=now)
    s.add(w)
    s.flush()
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="waiver.request", object_type="waiver",
                 object_id=w.id, tenant_id=tenant_id,
                 after={"code": w.code, "scope": w.scope, "justification": w.justification, "status": w.status},
                 request_id=p.request_id)
    s.commit()
    return waiver_out(w, now)


@router.get("", response_model=Page[WaiverOut], summary="List waivers (tenant roles see their tenant's)")
def list_waivers(*, status: Literal["requested", "approved", "rejected", "revoked"] | None = None,
                 code: Annotated[str | None, Query(max_length=64)] = None,
                 scope: Annotated[str | None, Query(max_length=96)] = None,
                 pg: Paging, p: Annotated[Principal, Depends(require("waivers:read"))],
                 s: DbSession) -> dict:
    q = select(Waiver)
    if p.scoped:
        q = q.where(Waiver.tenant_id == p.tenant_id)
    for column, val in ((Waiver.status, status), (Waiver.code, code), (Waiver.scope, scope)):
        if val is not None:
            q = q.where(column == val)
    items = s.exec(q.order_by(col(Waiver.id).desc()).offset(pg.offset).limit(pg.limit)).all()
    now = utcnow()
    return {"items": [waiver_out(w, now) for w in items], **page_meta(s, q, pg)}


@router.get("/{waiver_id}", response_model=WaiverOut, summary="Show a waiver")
def get_waiver(waiver_id: PathId, p: Annotated[Principal, Depends(require("waivers:read"))],
               s: DbSession) -> WaiverOut:
    return waiver_out(visible_waiver(s, p, waiver_id))


def _decide(s: Session, p: Principal, w: Waiver, *, expected: str, status: str, note: str, action: str,
            now: datetime, expires_at: datetime | None = None) -> WaiverOut:
    values: dict = {"status": status, "decided_by": p.user_id, "decided_at": now, "decision_note": note}
    if expires_at is not None:
        values["expires_at"] = expires_at
    res = s.exec(update(Waiver).where(col(Waiver.id) == w.id, col(Waiver.status) == expected)
                 .values(**values))
    if res.rowcount != 1:
        s.rollback()
        raise Problem(409, "waiver.changed", f"waiver {w.id} was decided concurrently",
                      hint=f"GET /v1/waivers/{w.id} to see its status")
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action=action, object_type="waiver", object_id=w.id,
                 tenant_id=w.tenant_id, before={"status": expected, "expires_at": iso(w.expires_at)},
                 after={"status": status, "code": w.code, "scope": w.scope, "note": note,
                        "expires_at": iso(expires_at if expires_at is not None else w.expires_at)},
                 request_id=p.request_id)
    s.commit()
    s.refresh(w)
    return waiver_out(w, now)


def _require_status(w: Waiver, expected: str, verb: str) -> None:
    if w.status != expected:
        code = "waiver.not_pending" if expected == "requested" else "waiver.not_approved"
        raise Problem(409, code, f"waiver {w.id} is {w.status}; only a {expected} waiver can be {verb}",
                      hint="ask for a new waiver" if w.status in ("rejected", "revoked") else
                      f"GET /v1/waivers/{w.id} to see its status")


@router.post("/{waiver_id}/approve", response_model=WaiverOut,
             summary="Approve a requested waiver until expires_at (not your own; expiry bounded by the policy)")
def approve_waiver(waiver_id: PathId, body: WaiverDecisionIn,
                   p: Annotated[Principal, Depends(require("waivers:decide"))], s: DbSession) -> WaiverOut:
    now = utcnow()
    w = visible_waiver(s, p, waiver_id)
    _require_status(w, "requested", "approved")
    asker = s.get(User, w.requested_by)
    asker_actor = guardrails.Actor(asker.name if asker else f"user#{w.requested_by}",
                                   asker.role if asker else "")
    problems = guardrails.validate_waiver_request(
        code=w.code, justification=w.justification, expires_at=body.expires_at, now=now, asker=asker_actor,
        policy=load_policy(s), approver=guardrails.Actor(p.name, str(p.role)), scope=w.scope)
    if w.requested_by == p.user_id and not any(v.code == "waiver.self_approval" for v in problems):
        problems.insert(0, guardrails.Violation(
            code="waiver.self_approval", rule="waiver", message=f"{p.name!r} asked for this waiver",
            remedy="Have another operator or admin approve it.", field="approver"))
    denied = [v for v in problems if v.code in AUTH_CODES]
    if denied:
        raise Problem(403, denied[0].code, "; ".join(v.message for v in denied),
                      hint=denied[0].remedy, violations=[v.to_dict() for v in problems],
                      codes=[v.code for v in problems])
    if problems:
        raise invalid(problems, "the waiver cannot be approved")
    assert body.expires_at is not None  # validate_waiver_request reports a missing expiry
    return _decide(s, p, w, expected="requested", status="approved", note=body.note, action="waiver.approve",
                   now=now, expires_at=as_utc(body.expires_at))


@router.post("/{waiver_id}/reject", response_model=WaiverOut, summary="Reject a requested waiver")
def reject_waiver(*, waiver_id: PathId, body: WaiverNoteIn | None = None,
                  p: Annotated[Principal, Depends(require("waivers:decide"))],
                  s: DbSession) -> WaiverOut:
    w = visible_waiver(s, p, waiver_id)
    _require_status(w, "requested", "rejected")
    return _decide(s, p, w, expected="requested", status="rejected", note=body.note if body else "",
                   action="waiver.reject", now=utcnow())


@router.post("/{waiver_id}/revoke", response_model=WaiverOut,
             summary="Revoke an approved waiver: it stops counting at once")
def revoke_waiver(*, waiver_id: PathId, body: WaiverNoteIn | None = None,
                  p: Annotated[Principal, Depends(require("waivers:decide"))],
                  s: DbSession) -> WaiverOut:
    w = visible_waiver(s, p, waiver_id)
    _require_status(w, "approved", "revoked")
    return _decide(s, p, w, expected="approved", status="revoked", note=body.note if body else "",
                   action="waiver.revoke", now=utcnow())
