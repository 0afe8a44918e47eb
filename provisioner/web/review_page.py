"""The dashboard's service review page (`/ui/review`): the same document as `GET /v1/review`, with
charts where people would rather look than read (error budget left per SLO, pool use over the period
against capacity, hosts by state, ratings), drawn server-side as SVG."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from markupsafe import Markup

from provisioner.api.bounds import Instant
from provisioner.api.deps import DbSession, Principal
from provisioner.core.permissions import allowed
from provisioner.core.review_markdown import pct
from provisioner.core.timeutil import utcnow
from provisioner.services import service_review
from provisioner.web import charts
from provisioner.web.dashboard import page, ui_principal

router = APIRouter(prefix="/ui", include_in_schema=False)


def install(app: Any) -> None:
    app.include_router(router)


def _charts(doc: dict[str, Any]) -> dict[str, Markup]:
    slos = doc["slo"]["slos"]
    out = {
        "budget": charts.hbars([(s["name"], s["budget_remaining"], pct(s["budget_remaining"], 1)) for s in slos],
                               label="error budget left per SLO", lo=-1.0, hi=1.0, good_at=0.0),
        "states": charts.hbars([(st, float(n), str(n)) for st, n in sorted(doc["fleet"]["by_state"].items())],
                               label="hosts by state", hi=float(max(doc["fleet"]["by_state"].values(), default=1))),
        "ratings": charts.vbars([(str(k), int(v)) for k, v in sorted(doc["ratings"]["distribution"].items())],
                                label="ratings 1-5"),
    }
    if doc["capacity"]:
        first = doc["capacity"][0]["series"]
        out["capacity"] = charts.lines(
            [(c["pool"], [float(n) for _, n in c["series"]]) for c in doc["capacity"]],
            label="hosts in use per pool, day by day", x_labels=[first[0][0], first[-1][0]] if first else [],
            ceilings=[(f"{c['pool']} capacity {c['capacity']}", float(c["capacity"])) for c in doc["capacity"]])
    # charts.py escapes every text it draws: the SVG is safe to embed as it is.
    return {k: Markup(v) for k, v in out.items()}  # noqa: S704


@router.get("/review")
def review_page(request: Request, p: Annotated[Principal, Depends(ui_principal)], s: DbSession,
                days: Annotated[int, Query(ge=1, le=400)] = 28,
                end: Annotated[Instant | None, Query(description="end of the period, default now")] = None) -> Response:
    if not allowed(p.role, "reports:read"):
        return page(request, "error.html", p, status=403, message="Your role may not read the service review.")
    doc = service_review.review(s, end=end or utcnow(), period=timedelta(days=days),
                                tenant_id=p.tenant_id if p.scoped else None)
    return page(request, "review.html", p, doc=doc, charts=_charts(doc), days=days)
