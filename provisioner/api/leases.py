"""Lease extension: POST /v1/requests/{id}/extend {hours}.

Who: whoever may release the request (permission requests:release: its tenant's customers and
imagers, operators, admins). The policy (`guardrails.can_extend`) decides how far: never more than
`max_lease_hours` ahead of now, at most `max_lease_extensions` times, not after expiry. Refusals are
one 422 "guardrails.violations" listing every reason. The number of extensions used is the number of
"request.lease_extend" audit entries of the request (the audit log is append-only, so it can't be
reset); the update is compare-and-set on the old expiry, so two concurrent extensions can't both
count as one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from provisioner.api.bounds import PathId
from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.guardrail_schemas import ExtendIn, LeaseOut
from provisioner.api.problems import Problem
from provisioner.api.requests import visible_request
from provisioner.core import guardrails
from provisioner.core.timeutil import as_utc, iso, utcnow
from provisioner.services import audit
from provisioner.services.admission import load_policy, violations_problem
from provisioner.store.models import AuditEntry, HostRequest

router = APIRouter(prefix="/v1/requests", tags=["requests"])

EXTEND_ACTION = "request.lease_extend"


def extensions_used(s: Session, request_id: int) -> int:
    return s.exec(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == EXTEND_ACTION, AuditEntry.object_type == "request",
        AuditEntry.object_id == str(request_id))).one()


@router.post("/{request_id}/extend", response_model=LeaseOut,
             summary="Extend a request's lease by some hours (bounded by the lease policy)")
def extend_lease(request_id: PathId, body: ExtendIn, p: Annotated[Principal, Depends(require("requests:release"))],
                 s: DbSession) -> LeaseOut:
    now = utcnow()
    req = visible_request(s, p, request_id)
    if req.lease_expires_at is None:
        raise Problem(409, "lease.none", f"request {req.id} has no lease: its hosts never expire",
                      hint="nothing to extend")
    if req.status in ("releasing", "released"):
        raise Problem(409, "request.not_extendable", f"request {req.id} is {req.status}",
                      hint="request new hosts instead")
    policy = load_policy(s)
    used = extensions_used(s, req.id or 0)
    old = req.lease_expires_at
    problems = guardrails.can_extend(old, body.hours, used, now, policy)
    if problems:
        raise violations_problem(problems, what="the lease extension")
    new = as_utc(old) + timedelta(hours=body.hours)
    res = s.exec(update(HostRequest).where(col(HostRequest.id) == req.id,
                                           col(HostRequest.lease_expires_at) == old)
                 .values(lease_expires_at=new))
    if res.rowcount != 1:
        s.rollback()
        raise Problem(409, "lease.changed", f"the lease of request {req.id} changed concurrently",
                      hint=f"GET /v1/requests/{req.id} and retry")
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action=EXTEND_ACTION, object_type="request",
                 object_id=req.id, tenant_id=req.tenant_id, before={"lease_expires_at": iso(old)},
                 after={"lease_expires_at": iso(new), "hours": body.hours, "extensions_used": used + 1},
                 request_id=p.request_id)
    s.commit()
    return LeaseOut(request_id=req.id or 0, lease_expires_at=new, extensions_used=used + 1,
                    max_extensions=policy.max_lease_extensions)
