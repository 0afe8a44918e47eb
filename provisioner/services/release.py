"""Releasing a request's hosts, shared by POST /v1/requests/{id}/release and lease expiry.

Same logic as the release route: only a ready or failed request can be released; each of its hosts
in state active or failed moves to releasing (compare-and-set) and gets a release job; the request
becomes "releasing" (or "released" at once when no host needed a job). The caller commits; the
doorbell announces the jobs after the commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from provisioner.core.errors import Conflict
from provisioner.core.timeutil import utcnow
from provisioner.services import audit
from provisioner.services.host_transitions import cas_state
from provisioner.services.jobs import new_job
from provisioner.store.models import Host, HostRequest

RELEASABLE = ("ready", "failed")


class NotReleasable(Conflict):
    """Only a ready or failed request can be released."""

    def __init__(self, req: HostRequest) -> None:
        super().__init__("request.not_releasable", f"request {req.id} is {req.status}",
                         hint="a request can be released once it is ready or failed; cancel running jobs first"
                         if req.status in ("provisioning", "reimaging") else "it is already released or releasing")


def release_request_hosts(session: Session, req: HostRequest, *, actor_id: int | None, actor_name: str,
                          action: str = "request.release", request_id: str | None = None,
                          extra: dict[str, Any] | None = None) -> list[int]:
    """Start releasing `req` in the caller's transaction; returns the new release job ids.

    Raises NotReleasable when the request is not ready or failed. Writes the audit entry `action`
    with before/after status (plus `extra` in after). Does not commit.
    """
    if req.status not in RELEASABLE:
        raise NotReleasable(req)
    before = req.status
    # Compare-and-set first: of two concurrent releases (a user and the lease pass) one wins, the
    # other sees the new status instead of marking a releasing request "released".
    res = session.exec(update(HostRequest).where(col(HostRequest.id) == req.id, col(HostRequest.status) == before)
                       .values(status="releasing"))
    if res.rowcount != 1:
        session.refresh(req)
        raise NotReleasable(req)
    hosts = session.exec(select(Host).where(Host.request_id == req.id)).all()
    job_ids: list[int] = []
    for h in hosts:
        if h.state in ("active", "failed") and cas_state(session, h.id or 0, h.state, "releasing"):
            job_ids.append(new_job(session, "release", h, request_id=req.id, tenant_id=req.tenant_id).id or 0)
    req.status = "releasing" if job_ids else "released"
    if not job_ids:
        req.released_at = utcnow()
    session.add(req)
    audit.record(session, actor_id=actor_id, actor_name=actor_name, action=action, object_type="request",
                 object_id=req.id, tenant_id=req.tenant_id, before={"status": before},
                 after={"status": req.status, "jobs": job_ids} | (extra or {}), request_id=request_id)
    return job_ids
