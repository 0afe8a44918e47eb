"""Compliance of active hosts: per host, per tenant and fleet-wide (customers see their tenant)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlmodel import select

from provisioner.api.deps import DbSession, Principal, require
from provisioner.store.models import Host

router = APIRouter(prefix="/v1/compliance", tags=["compliance"])


@router.get("", summary="Compliance summary: fleet, per tenant, and every non-compliant host with its reasons")
def summary(p: Annotated[Principal, Depends(require("hosts:read"))], s: DbSession) -> dict:
    q = select(Host).where(Host.state == "active")
    if p.scoped:
        q = q.where(Host.tenant_id == p.tenant_id)
    fleet = {"active": 0, "compliant": 0, "noncompliant": 0, "unchecked": 0}
    tenants: dict[int | None, dict[str, int]] = {}
    bad = []
    for h in s.exec(q).all():
        verdict = h.compliance or {}
        key = "unchecked" if "compliant" not in verdict else ("compliant" if verdict["compliant"] else "noncompliant")
        for bucket in (fleet, tenants.setdefault(h.tenant_id, {"active": 0, "compliant": 0, "noncompliant": 0,
                                                               "unchecked": 0})):
            bucket["active"] += 1
            bucket[key] += 1
        if key == "noncompliant":
            bad.append({"host_id": h.id, "name": h.name, "tenant_id": h.tenant_id,
                        "checked_at": verdict.get("checked_at"),
                        "last_restore_at": h.last_restore_at,
                        "violations": verdict.get("violations", [])})
    return {"fleet": fleet, "tenants": [{"tenant_id": t} | c for t, c in tenants.items()], "noncompliant": bad}
