"""The audit log: read-only through the API (append-only by construction: no route changes it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlmodel import col, select

from provisioner.api.bounds import Instant
from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.pagination import Paging, page_meta
from provisioner.api.schemas import AuditOut, Page
from provisioner.core.timeutil import as_utc
from provisioner.store.models import AuditEntry

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=Page[AuditOut], summary="Audit entries, newest first")
def list_audit(*, action: Annotated[str | None, Query(max_length=64)] = None,
               object_type: Annotated[str | None, Query(max_length=32)] = None,
               object_id: Annotated[str | None, Query(max_length=64)] = None,
               actor: Annotated[str | None, Query(max_length=64)] = None,
               since: Annotated[Instant | None, Query(description="entries at or after this instant")] = None,
               pg: Paging,
               _: Annotated[Principal, Depends(require("audit:read"))], s: DbSession) -> dict:
    q = select(AuditEntry)
    for column, val in ((AuditEntry.action, action), (AuditEntry.object_type, object_type),
                        (AuditEntry.object_id, object_id), (AuditEntry.actor_name, actor)):
        if val is not None:
            q = q.where(column == val)
    if since is not None:
        q = q.where(AuditEntry.at >= as_utc(since))
    items = s.exec(q.order_by(col(AuditEntry.id).desc()).offset(pg.offset).limit(pg.limit)).all()
    return {"items": items, **page_meta(s, q, pg)}
