"""The FastAPI application: routers, problem handlers, limits, and (embedded mode) the worker
threads and the reconciler started with the app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from provisioner.api import (
    admin,
    audit_log,
    compliance,
    hosts,
    images,
    jobs,
    leases,
    meta,
    policy,
    quotas,
    requests,
    waivers,
)
from provisioner.api.limits import RequestLimits
from provisioner.config import Settings, get_settings
from provisioner.db import get_engine
from provisioner.problems import install_handlers
from provisioner.web import dashboard

log = logging.getLogger("provisioner")

DESCRIPTION = """Self-service host provisioning with guardrails and install-time SLIs.

Every error is an RFC 9457 `application/problem+json` document with a stable `code`, a human
`detail` and, where there is one, a `hint` saying what to do next. Authenticate with
`Authorization: Bearer prov_...` (tokens are created by admins and shown once)."""


def create_app(settings: Settings | None = None, *, embedded_worker: bool | None = None) -> FastAPI:
    settings = settings or get_settings()
    run_worker = settings.embedded_broker if embedded_worker is None else embedded_worker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        get_engine(settings)
        from workers.actors import enqueue
        from workers.broker import get_broker
        from workers.reconciler import Reconciler

        worker = None
        if run_worker:
            import dramatiq

            worker = dramatiq.Worker(get_broker(), worker_threads=settings.worker_threads, worker_timeout=100)
            worker.start()
        rec = Reconciler(settings, enqueue).start() if settings.run_reconciler else None
        try:
            yield
        finally:
            if rec:
                rec.stop()
            if worker:
                worker.stop(timeout=10_000)

    app = FastAPI(title="provisioner", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)

    install_handlers(app)
    dashboard.install(app)
    for r in (meta.router, admin.router, hosts.router, compliance.router, requests.router, jobs.router,
              audit_log.router, policy.router, waivers.router, quotas.router, leases.router, images.router):
        app.include_router(r)
    app.add_middleware(RequestLimits, max_body=settings.max_body_bytes)
    return app


def app_from_env() -> FastAPI:
    """Factory for multi-process uvicorn (`PROVISIONER_API_WORKERS` > 1)."""
    import os

    return create_app(get_settings(), embedded_worker=os.environ.get("PROVISIONER_EMBEDDED_WORKER") == "1")
