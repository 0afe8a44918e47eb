"""SLOs: events, attainment, error budget left and burn rates per alert window (`GET /v1/slo`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from provisioner.api.bounds import Instant, PeriodDays
from provisioner.api.deps import DbSession, Principal, require
from provisioner.core.slo import BURN_ALERTS, window_label
from provisioner.core.timeutil import iso, utcnow
from provisioner.services.slo_report import slo_report, status_document

router = APIRouter(prefix="/v1/slo", tags=["slo"])


@router.get("", summary="SLOs with their error budget left and multi-window burn rates",
            description="Every SLO judged over the finished jobs of its period (28 days unless `period_days` "
                        "says otherwise) ending at `end` (now by default): events, good, bad, attainment, the "
                        "share of the error budget left (1 untouched, 0 spent, negative overspent), the burn "
                        "rate of each alert window (1.0 spends the budget in exactly the period; null: no event "
                        "in the window) and which of the SRE workbook's alert pairs fire (both windows at or "
                        "above the factor). Cancelled jobs are not counted; failed ones are bad. A customer "
                        "sees their own tenant's jobs only.")
def get_slo(p: Annotated[Principal, Depends(require("reports:read"))], s: DbSession,
            period_days: PeriodDays = None,
            end: Annotated[Instant | None, Query(description="end of the period (ISO 8601), default now")] = None,
            ) -> dict[str, Any]:
    period = None if period_days is None else timedelta(days=period_days)
    statuses = slo_report(s, end=end or utcnow(), period=period, tenant_id=p.tenant_scope)
    return {
        "end": iso(statuses[0].end) if statuses else iso(end or utcnow()),
        "alert_pairs": [{"name": a.name, "severity": a.severity, "long_window": window_label(a.long_window),
                         "short_window": window_label(a.short_window), "factor": a.factor} for a in BURN_ALERTS],
        "slos": [status_document(st) for st in statuses],
    }
