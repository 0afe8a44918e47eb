"""Health, identity and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text

from provisioner.api import http_metrics
from provisioner.api.deps import DbSession, Principal, require
from provisioner.core.timeutil import utcnow
from provisioner.services.fleet_metrics import DatabaseCollector
from provisioner.services.slo_report import configured_slos
from provisioner.store.config import get_settings

router = APIRouter(tags=["meta"])


@router.get("/healthz", summary="Liveness and database reachability")
def healthz(s: DbSession) -> dict:
    s.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/v1/me", summary="Who am I")
def me(p: Annotated[Principal, Depends(require("me:read"))]) -> dict:
    return {"id": p.user_id, "name": p.name, "role": p.role, "tenant_id": p.tenant_id}


@router.get("/metrics", response_class=Response,
            summary="Prometheus metrics (Prometheus sends a token of an operator, auditor or admin as bearer)",
            description="Job and phase duration histograms, job outcomes by kind, status and reason, SLO events "
                        "and objectives, hosts by pool and state, queue depth and the oldest queued and running "
                        "job, compliance of active hosts (all read from the database, the same from every API "
                        "process), and this process's HTTP request latency by route and status (labelled with "
                        "`process`). Scrape with `authorization: {credentials_file: ...}` holding a token of an "
                        "operator, auditor or admin.")
def metrics(_: Annotated[Principal, Depends(require("metrics:read"))], s: DbSession) -> Response:
    # A registry per scrape around the database's values; the HTTP histogram is this process's own.
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DatabaseCollector(s, configured_slos(get_settings()), utcnow()))
    return Response(generate_latest(reg) + generate_latest(http_metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
