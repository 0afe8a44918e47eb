"""Append-only audit trail. Entries are written in the same transaction as the change they record."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from provisioner.store.models import AuditEntry


def record(
    session: Session,
    *,
    actor_id: int | None,
    actor_name: str,
    action: str,
    object_type: str,
    object_id: object,
    tenant_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        actor_id=actor_id,
        actor_name=actor_name,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        tenant_id=tenant_id,
        before=before,
        after=after,
        request_id=request_id,
    )
    session.add(entry)
    return entry
