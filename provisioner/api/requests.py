"""Host requests: customers ask for hosts, watch them, release them."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Query
from sqlmodel import Session, col, select

from provisioner.api.bounds import PathId
from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.pagination import Paging, page_meta
from provisioner.api.problems import Problem, not_found
from provisioner.api.schemas import Page, ReimageIn, RequestIn, RequestOut
from provisioner.core import guardrails
from provisioner.core.allocation import Constraints
from provisioner.core.timeutil import as_utc, utcnow
from provisioner.imaging.catalogue import catalogue_image_ref, check_requestable
from provisioner.services.admission import admit, load_policy, violations_problem
from provisioner.services.reimage import reimage_request
from provisioner.services.release import release_request_hosts
from provisioner.services.requests import open_request
from provisioner.store.config import get_settings
from provisioner.store.models import HostRequest, Job, Tenant

router = APIRouter(prefix="/v1/requests", tags=["requests"])


def request_out(s: Session, r: HostRequest) -> RequestOut:
    out = RequestOut.model_validate(r)
    jobs = s.exec(select(Job.id, Job.host_id).where(Job.request_id == r.id).order_by(col(Job.id))).all()
    out.job_ids = [cast(int, j[0]) for j in jobs]  # stored rows always have their (primary key) id
    out.host_ids = sorted({j[1] for j in jobs})
    return out


def visible_request(s: Session, p: Principal, request_id: int) -> HostRequest:
    r = s.get(HostRequest, request_id)
    if r is None or not p.sees_tenant(r.tenant_id):
        raise not_found("request", request_id)
    return r


def request_spec(body: RequestIn, *, tenant: str, role: str,
                 image: guardrails.ImageRef | None) -> guardrails.RequestSpec:
    """The request body as the guardrails see it."""
    return guardrails.RequestSpec(
        tenant=tenant,
        requester_role=role,
        pool=body.pool,
        image=image,
        backup=guardrails.BackupSpec(enabled=body.backup.enabled, paths=tuple(body.backup.paths),
                                     retention_days=body.backup.retention_days, schedule=body.backup.schedule),
        count=body.count,
        raid_level=body.raid_level,
        data_disks=None,
        open_ports=tuple(guardrails.PortRule(port=p.port, proto=p.proto, sources=tuple(p.sources))
                         for p in body.firewall_ports),
        lease_hours=body.lease_hours,
    )


def phase_params(body: RequestIn, policy: guardrails.Policy) -> dict[str, Any]:
    """What the phases get from a request (keys, backup, firewall, RAID, the customer user). A request
    without a RAID level gets its pool's minimum from the policy, the level admission judged."""
    params = body.model_dump(mode="json", exclude={"count", "pool", "constraints", "image", "lease_hours"})
    if params.get("raid_level") is None and policy.requires_redundancy(body.pool):
        params["raid_level"] = policy.min_raid_level(body.pool)
    return params


@router.post("", status_code=202, response_model=RequestOut,
             summary="Request hosts: allocates matching available hosts and queues one provision job each",
             description="`image` names a catalogue image the requester may use on the pool, or is left out "
                         "(hosts reached over SSH, which keep their installed OS; no image is written). An "
                         "image is written only by the deploy ramdisk on hosts enrolled by their BMC: an image "
                         "request in a pool with none is refused with 409 `image.needs_bmc`. A name outside the "
                         "catalogue is refused with 422 `image.unknown`: `requestable` lists the first 20 "
                         "names (sorted) this requester can request on the pool, `requestable_total` how many "
                         "there are. Images the requester may not use keep their codes (`image.deprecated`, "
                         "`image.retired`, `image.flagged`, `image.unavailable`, `image.channel_not_allowed`). "
                         "Guardrail violations come in one 422 `guardrails.violations`; nothing is written "
                         "for a refusal.")
def create_request(body: RequestIn, p: Annotated[Principal, Depends(require("requests:create"))],
                   s: DbSession) -> RequestOut:
    if p.tenant_id is None:
        raise Problem(422, "request.no_tenant", "your user belongs to no tenant", hint="ask an admin")
    now = utcnow()
    image = None
    if body.image is not None:
        # An unknown name is refused here, listing what this requester may ask for on this pool;
        # the channel the guardrails judge comes from the catalogue record, never from the name.
        channels = guardrails.allowed_channels(str(p.role), body.pool, load_policy(s))
        refusal = check_requestable(s, body.image, p.role, channels)
        if refusal is not None:
            raise refusal
        image = catalogue_image_ref(s, body.image)
    tenant = s.get(Tenant, p.tenant_id)
    policy = admit(s, p, request_spec(body, tenant=tenant.name if tenant else "", role=str(p.role), image=image),
                   now)
    # No lease asked for: the policy's default_lease_hours (None = the host never expires).
    lease_end, lease_problems = guardrails.lease_expiry(body.lease_hours, now, policy)
    if lease_problems:
        raise violations_problem(lease_problems, what="the request")
    lease_expires_at = as_utc(lease_end) if lease_end is not None else None
    c = body.constraints
    req, _, _ = open_request(
        s, get_settings(), p, tenant_id=p.tenant_id, image=body.image, pool=body.pool, count=body.count,
        constraints=Constraints(pool=body.pool, labels=dict(c.labels), min_cpus=c.min_cpus,
                                min_memory_mb=c.min_memory_mb, min_disks=c.min_disks, with_image=bool(body.image)),
        params=phase_params(body, policy), accepted_at=now, lease_expires_at=lease_expires_at,
        audit_after=body.model_dump(mode="json", exclude={"ssh_public_key"}))
    s.commit()
    return request_out(s, req)


@router.get("", response_model=Page[RequestOut], summary="List requests (customers see their tenant's)")
def list_requests(*, status: Annotated[str | None, Query(max_length=16)] = None, pg: Paging,
                  p: Annotated[Principal, Depends(require("requests:read"))], s: DbSession) -> dict:
    q = select(HostRequest)
    if p.scoped:
        q = q.where(HostRequest.tenant_id == p.tenant_id)
    if status:
        q = q.where(HostRequest.status == status)
    items = s.exec(q.order_by(col(HostRequest.id).desc()).offset(pg.offset).limit(pg.limit)).all()
    return {"items": [request_out(s, r) for r in items], **page_meta(s, q, pg)}


@router.get("/{request_id}", response_model=RequestOut, summary="Show a request")
def get_request(request_id: PathId, p: Annotated[Principal, Depends(require("requests:read"))],
                s: DbSession) -> RequestOut:
    return request_out(s, visible_request(s, p, request_id))


@router.post("/{request_id}/release", status_code=202, response_model=RequestOut,
             summary="Release a request's hosts: wipes them and returns them to the pool")
def release_request(request_id: PathId, p: Annotated[Principal, Depends(require("requests:release"))],
                    s: DbSession) -> RequestOut:
    req = visible_request(s, p, request_id)
    release_request_hosts(s, req, actor_id=p.user_id, actor_name=p.name, request_id=p.request_id)
    s.commit()
    return request_out(s, req)


@router.post("/{request_id}/reimage", status_code=202, response_model=RequestOut,
             summary="Reimage a ready request's hosts (enrolled by their BMC) with another catalogue image",
             description="The deploy runs again on every host of the request (or on `host_id` only): the deploy "
                         "ramdisk writes the image onto the root disk, then RAID, firewall, backups, a restore "
                         "test and handover run in the new OS. With `keep_data` (the default) only the root disk "
                         "is wiped and the existing data array is assembled with its files; false wipes every "
                         "disk. The request's image becomes the new one at once (audited as `request.reimage`); "
                         "the request is `reimaging`, its hosts `provisioning`, until the jobs end: then `ready` "
                         "with active hosts (same tenant, request and lease), or `failed`. Refused: a request "
                         "that is not ready (409 `request.not_active`), a name outside the catalogue (422 "
                         "`image.unknown`, listing the images you can request), an image you may not request "
                         "(422 `image.channel_not_allowed`, `image.deprecated`, `image.retired`, "
                         "`image.flagged`), a host enrolled over SSH (409 `host.reimage_needs_bmc`).")
def reimage(request_id: PathId, body: ReimageIn, p: Annotated[Principal, Depends(require("requests:reimage"))],
            s: DbSession) -> RequestOut:
    req = visible_request(s, p, request_id)
    reimage_request(s, req, p, image=body.image, keep_data=body.keep_data, host_id=body.host_id)
    s.commit()
    return request_out(s, req)
