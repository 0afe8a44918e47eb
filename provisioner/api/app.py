"""The FastAPI application: routers, problem handlers, limits. What runs beside the API in the
same process (worker threads, the reconciler) is handed in by the composition root
(`provisioner.cli.service`) as `background`: the API itself knows nothing of the workers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext

from fastapi import Depends, FastAPI

from provisioner.api import (
    admin,
    audit_log,
    compliance,
    hosts,
    images,
    jobs,
    leases,
    meta,
    openapi_problems,
    policy,
    quotas,
    ratings,
    requests,
    review,
    slo,
    waivers,
    webhooks,
)
from provisioner.api.http_metrics import HttpMetrics
from provisioner.api.limits import RequestLimits
from provisioner.api.problems import install_handlers
from provisioner.api.query_strict import refuse_unknown_query
from provisioner.store.config import Settings, get_settings
from provisioner.store.db import get_engine

log = logging.getLogger("provisioner")

DESCRIPTION = """Self-service host provisioning with guardrails and install-time SLIs.

Every error is an RFC 9457 `application/problem+json` document with a stable `code`, a human
`detail` and, where there is one, a `hint` saying what to do next. Authenticate with
`Authorization: Bearer prov_...` (tokens are created by admins and shown once)."""


def create_app(settings: Settings | None = None, *,
               background: Callable[[], AbstractContextManager[object]] | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        get_engine(settings)
        with background() if background is not None else nullcontext():
            yield

    app = FastAPI(title="provisioner", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  dependencies=[Depends(refuse_unknown_query)])

    install_handlers(app)
    for r in (meta.router, admin.router, hosts.router, compliance.router, requests.router, jobs.router,
              audit_log.router, policy.router, waivers.router, quotas.router, leases.router, images.router,
              webhooks.router, ratings.router, slo.router, review.router):
        app.include_router(r)
    app.add_middleware(RequestLimits, max_body=settings.max_body_bytes)
    # Outermost, so a request refused by the limits is counted with its 413.
    app.add_middleware(HttpMetrics)
    openapi_problems.install(app)
    return app

