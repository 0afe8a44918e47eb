"""Tenant quotas: {pool: max hosts at once}, set by admins, enforced at admission.

An empty quota means unlimited (tenants created without one keep working); once any pool is listed,
pools not listed have quota 0. Lowering a quota below current use releases nothing: it only
refuses new requests until the tenant is back under it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlmodel import select

from provisioner.api.bounds import PathId
from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.guardrail_schemas import QuotaIn
from provisioner.api.problems import not_found
from provisioner.api.schemas import TenantOut
from provisioner.services import audit
from provisioner.store.models import Tenant

router = APIRouter(prefix="/v1/tenants", tags=["admin"])


@router.put("/{tenant_id}/quota", response_model=TenantOut,
            summary="Replace a tenant's quota ({pool: max hosts}; {} = unlimited, unlisted pools = 0)")
def put_quota(tenant_id: PathId, body: QuotaIn, p: Annotated[Principal, Depends(require("tenants:write"))],
              s: DbSession) -> Tenant:
    t = s.exec(select(Tenant).where(Tenant.id == tenant_id).with_for_update()).first()
    if t is None:
        raise not_found("tenant", tenant_id)
    before = dict(t.quota or {})
    t.quota = dict(body.quota)
    s.add(t)
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="tenant.quota", object_type="tenant",
                 object_id=t.id, tenant_id=t.id, before={"quota": before}, after={"quota": t.quota},
                 request_id=p.request_id)
    s.commit()
    return t
