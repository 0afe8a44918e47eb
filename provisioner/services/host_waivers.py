"""The waivers that count for a host: its own, its request's and its tenant's, while approved and
unexpired. Shared by the handover gate, the phase that a waiver switches off, compliance and the
host view, so all four agree on which exceptions a host runs under."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from provisioner.core import guardrails
from provisioner.core.timeutil import iso
from provisioner.store.guardrail_models import Waiver
from provisioner.store.models import Host, Tenant


def scopes_for(session: Session, host: Host) -> list[str]:
    tenant = session.get(Tenant, host.tenant_id) if host.tenant_id else None
    return ([guardrails.scope("host", host.id or 0)]
            + ([guardrails.scope("request", host.request_id)] if host.request_id else [])
            + ([guardrails.scope("tenant", tenant.name)] if tenant else []))


def active_rows(session: Session, host: Host, now: datetime, code: str | None = None) -> list[Waiver]:
    """Approved waivers for the host's scopes that have not expired (expiry == now is expired)."""
    q = select(Waiver).where(Waiver.status == "approved", col(Waiver.scope).in_(scopes_for(session, host)))
    if code is not None:
        q = q.where(Waiver.code == code)
    rows = session.exec(q.order_by(col(Waiver.id))).all()
    return [w for w in rows if w.expires_at is not None and w.expires_at > now]


def describe(w: Waiver) -> dict[str, Any]:
    return {"id": w.id, "code": w.code, "scope": w.scope, "expires_at": iso(w.expires_at),
            "justification": w.justification}


def as_reason(w: Waiver) -> str:
    return f"waiver #{w.id} of {w.code} ({w.scope}, until {iso(w.expires_at)})"
