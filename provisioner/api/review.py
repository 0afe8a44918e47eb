"""The service review (`GET /v1/review`) and the weekly production-meeting summary
(`GET /v1/review/weekly`), as JSON or Markdown.

`reports:read`: operators, auditors and admins see every tenant; a customer sees their own
tenant's numbers only (jobs, SLOs, hosts, toil, ratings), and no pool capacity. Markdown with
`?format=markdown` or `Accept: text/markdown`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, Response

from provisioner.api.bounds import Instant, PeriodDays
from provisioner.api.deps import DbSession, Principal, require
from provisioner.core import review_markdown
from provisioner.core.timeutil import utcnow
from provisioner.services import service_review

router = APIRouter(prefix="/v1/review", tags=["review"])

MARKDOWN = "text/markdown; charset=utf-8"
Format = Literal["json", "markdown"]
BOTH: dict[int | str, dict[str, Any]] = {200: {"description": "the document as JSON, or as Markdown when asked for",
              "content": {"application/json": {"schema": {"type": "object"}},
                          "text/markdown": {"schema": {"type": "string"}}}}}
SCOPE = ("Operators, auditors and admins see every tenant; a customer sees their own tenant's numbers only "
         "(and no pool capacity). Markdown with `format=markdown` or `Accept: text/markdown`.")


def _answer(doc: dict[str, Any], fmt: Format | None, accept: str | None, render: Any) -> Response:
    if fmt == "markdown" or (fmt is None and accept is not None and "text/markdown" in accept):
        return Response(render(doc), media_type=MARKDOWN)
    return JSONResponse(doc)


End = Annotated[Instant | None, Query(description="end of the period (ISO 8601), default now")]
FormatQ = Annotated[Format | None, Query(description="json (default) or markdown")]
Accept = Annotated[str | None, Header(max_length=1024, pattern=r"^[^\x00]*$",
                                      description="text/markdown for the Markdown export")]


@router.get("", response_class=Response, responses=BOTH,
            summary="The service review over a period (28 days by default)",
            description="From live data: SLO summary with the error budget left and the alerts firing; progress "
                        "against the service's goals (each SLO's attainment, this period and the one before); "
                        "jobs by kind and status; people and hardware (hosts by state and pool, utilisation); "
                        "data integrity (restore tests run, passed, failed, hosts by oldest last restore); toil "
                        "(failed and retried jobs, manual host moves, waivers granted, escalations opened: "
                        "`toil.counted` says from which table); capacity plans (per pool: daily use, trend in "
                        "hosts per day, the day it runs out at that rate); customer ratings and open "
                        "escalations; a maturity matrix scored from these numbers; the data catalogue. " + SCOPE)
def get_review(p: Annotated[Principal, Depends(require("reports:read"))], s: DbSession,
               period_days: PeriodDays = 28, end: End = None, format: FormatQ = None,
               accept: Accept = None) -> Response:
    doc = service_review.review(s, end=end or utcnow(), period=timedelta(days=period_days or 28),
                                tenant_id=p.tenant_scope)
    return _answer(doc, format, accept, review_markdown.review)


@router.get("/weekly", response_class=Response, responses=BOTH,
            summary="The weekly production-meeting summary (7 days by default)",
            description="What changed (images promoted or deprecated, policy versions, from the audit log), the SLOs "
                        "over the week, jobs by kind and status, the top failure reasons (failed jobs by kind and "
                        "error code), toil and the open escalations. " + SCOPE)
def get_weekly(p: Annotated[Principal, Depends(require("reports:read"))], s: DbSession,
               period_days: PeriodDays = 7, end: End = None, format: FormatQ = None,
               accept: Accept = None) -> Response:
    doc = service_review.weekly(s, end=end or utcnow(), period=timedelta(days=period_days or 7),
                                tenant_id=p.tenant_scope)
    return _answer(doc, format, accept, review_markdown.weekly)
