"""Host requests: customers ask for hosts, watch them, release them."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Query
from sqlmodel import Session, select

from provisioner import audit
from provisioner.admission import admit
from provisioner.allocation import Constraints
from provisioner.allocator import NotEnoughHosts, allocate, create_vagrant_hosts
from provisioner.api.deps import Principal, get_session, require
from provisioner.api.pagination import PageParams, page_meta, page_params
from provisioner.api.schemas import Page, RequestIn, RequestOut
from provisioner.config import get_settings
from provisioner.imaging.catalogue import check_requestable
from provisioner.jobs import enqueue_after_commit, new_job
from provisioner.models import HostRequest, Job
from provisioner.problems import Problem, not_found
from provisioner.release import release_request_hosts
from provisioner.timeutil import utcnow

router = APIRouter(prefix="/v1/requests", tags=["requests"])


def request_out(s: Session, r: HostRequest) -> RequestOut:
    out = RequestOut.model_validate(r)
    jobs = s.exec(select(Job.id, Job.host_id).where(Job.request_id == r.id).order_by(Job.id)).all()
    out.job_ids = [j[0] for j in jobs]
    out.host_ids = sorted({j[1] for j in jobs})
    return out


def visible_request(s: Session, p: Principal, request_id: int) -> HostRequest:
    r = s.get(HostRequest, request_id)
    if r is None or not p.sees_tenant(r.tenant_id):
        raise not_found("request", request_id)
    return r


@router.post("", status_code=202, response_model=RequestOut,
             summary="Request hosts: allocates matching available hosts and queues one provision job each")
def create_request(body: RequestIn, p: Principal = Depends(require("requests:create")),
                   s: Session = Depends(get_session)) -> RequestOut:
    if p.tenant_id is None:
        raise Problem(422, "request.no_tenant", "your user belongs to no tenant", hint="ask an admin")
    now = utcnow()
    refusal = check_requestable(s, body.image, p.role)
    if refusal is not None:
        raise refusal
    admit(s, p, body, now)
    params = body.model_dump(mode="json", exclude={"count", "pool", "constraints", "image", "lease_hours"})
    req = HostRequest(tenant_id=p.tenant_id, requested_by=p.user_id, image=body.image, count=body.count,
                      pool=body.pool, constraints=body.constraints.model_dump(), params=params,
                      accepted_at=now,
                      lease_expires_at=now + timedelta(hours=body.lease_hours) if body.lease_hours else None)
    s.add(req)
    s.flush()
    want = Constraints(pool=body.pool, labels=dict(body.constraints.labels), min_cpus=body.constraints.min_cpus,
                       min_memory_mb=body.constraints.min_memory_mb, min_disks=body.constraints.min_disks)
    settings = get_settings()
    try:
        if body.pool == settings.vagrant_pool:
            hosts = create_vagrant_hosts(s, body.count, max_vms=settings.vagrant_max_vms, tenant_id=p.tenant_id,
                                         request_id=req.id or 0, pool=body.pool)
        else:
            hosts = allocate(s, want, body.count, tenant_id=p.tenant_id, request_id=req.id or 0)
    except NotEnoughHosts as exc:
        s.rollback()
        raise Problem(409, "capacity.insufficient",
                      f"{exc.wanted} host(s) wanted in pool {body.pool!r} but only {exc.matching} available "
                      "(before constraints are applied)",
                      hint="lower count or constraints, choose another pool, or retry when hosts are released",
                      wanted=exc.wanted, available=exc.matching) from None
    jobs = [new_job(s, "provision", h, request_id=req.id, tenant_id=p.tenant_id, accepted_at=now,
                    settings=settings) for h in hosts]
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="request.create", object_type="request",
                 object_id=req.id, tenant_id=p.tenant_id,
                 after=body.model_dump(mode="json", exclude={"ssh_public_key"})
                 | {"hosts": [h.name for h in hosts], "jobs": [j.id for j in jobs]},
                 request_id=p.request_id)
    s.commit()
    enqueue_after_commit([j.id or 0 for j in jobs])
    return request_out(s, req)


@router.get("", response_model=Page[RequestOut], summary="List requests (customers see their tenant's)")
def list_requests(status: str | None = Query(None, max_length=16), pg: PageParams = Depends(page_params),
                  p: Principal = Depends(require("requests:read")), s: Session = Depends(get_session)) -> dict:
    q = select(HostRequest)
    if p.scoped:
        q = q.where(HostRequest.tenant_id == p.tenant_id)
    if status:
        q = q.where(HostRequest.status == status)
    items = s.exec(q.order_by(HostRequest.id.desc()).offset(pg.offset).limit(pg.limit)).all()  # type: ignore[union-attr]
    return {"items": [request_out(s, r) for r in items], **page_meta(s, q, pg)}


@router.get("/{request_id}", response_model=RequestOut, summary="Show a request")
def get_request(request_id: int, p: Principal = Depends(require("requests:read")),
                s: Session = Depends(get_session)) -> RequestOut:
    return request_out(s, visible_request(s, p, request_id))


@router.post("/{request_id}/release", status_code=202, response_model=RequestOut,
             summary="Release a request's hosts: wipes them and returns them to the pool")
def release_request(request_id: int, p: Principal = Depends(require("requests:release")),
                    s: Session = Depends(get_session)) -> RequestOut:
    req = visible_request(s, p, request_id)
    job_ids = release_request_hosts(s, req, actor_id=p.user_id, actor_name=p.name, request_id=p.request_id)
    s.commit()
    enqueue_after_commit(job_ids)
    return request_out(s, req)
