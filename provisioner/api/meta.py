"""Health, identity and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, text
from sqlmodel import col, select

from provisioner.api.deps import DbSession, Principal, require
from provisioner.store.models import Host, Job

router = APIRouter(tags=["meta"])


@router.get("/healthz", summary="Liveness and database reachability")
def healthz(s: DbSession) -> dict:
    s.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/v1/me", summary="Who am I")
def me(p: Annotated[Principal, Depends(require("me:read"))]) -> dict:
    return {"id": p.user_id, "name": p.name, "role": p.role, "tenant_id": p.tenant_id}


@router.get("/metrics", response_class=Response,
            summary="Prometheus metrics (Prometheus sends a token of an operator, auditor or admin as bearer)")
def metrics(_: Annotated[Principal, Depends(require("metrics:read"))], s: DbSession) -> Response:
    # A fresh registry per scrape: values come from the database, the one source of truth,
    # so every API process reports the same numbers.
    reg = CollectorRegistry()
    hosts = Gauge("provisioner_hosts", "Hosts by state", ["state"], registry=reg)
    for state, n in s.exec(select(Host.state, func.count()).group_by(Host.state)).all():
        hosts.labels(state).set(n)
    jobs = Gauge("provisioner_jobs", "Jobs by kind and status", ["kind", "status"], registry=reg)
    for kind, status, n in s.exec(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)).all():
        jobs.labels(kind, status).set(n)
    met = Gauge("provisioner_jobs_slo_met", "Finished jobs by kind and SLO outcome", ["kind", "met"], registry=reg)
    for kind, ok, n in s.exec(select(Job.kind, Job.slo_met, func.count())
                              .where(col(Job.slo_met).is_not(None)).group_by(Job.kind, col(Job.slo_met))).all():
        met.labels(kind, str(bool(ok)).lower()).set(n)
    return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)
