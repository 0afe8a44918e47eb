"""The SLOs over job history: events read from the finished job rows, judged by `core.slo`.

`slo_report(session, end=..., period=...)` is the one call for anyone who needs the numbers (the
API, the dashboard, the service review): a period in, per SLO the events, attainment, error budget
left and the burn rate of every alert window ending at `end`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import literal, select
from sqlmodel import Session

from provisioner.core.errors import Invalid
from provisioner.core.slo import (
    DEFAULT_SLOS,
    Event,
    Slo,
    SloStatus,
    burn_windows,
    evaluate,
    job_facts,
    judge,
    window_label,
    with_targets,
)
from provisioner.core.timeutil import as_utc, iso, utcnow
from provisioner.store.config import Settings, get_settings
from provisioner.store.models import Job

# A report over more than a year would read every job row of it; the service review looks at weeks.
MAX_PERIOD = timedelta(days=400)


def configured_slos(settings: Settings) -> tuple[Slo, ...]:
    """The default SLOs with this deployment's per-kind targets (PROVISIONER_SLO_*_SECONDS)."""
    return with_targets(DEFAULT_SLOS, {k: settings.slo_seconds(k) for k in ("provision", "release", "commission")})


def slo_report(session: Session, *, end: datetime | None = None, period: timedelta | None = None,
               tenant_id: int | None = None, slos: tuple[Slo, ...] | None = None) -> list[SloStatus]:
    """Every SLO over (end - period, end]; `period` defaults to each SLO's own (28 days).
    `tenant_id` narrows to one tenant's jobs (what a customer sees)."""
    slos = slos if slos is not None else configured_slos(get_settings())
    end = as_utc(end) if end is not None else utcnow()
    if period is not None and not timedelta(0) < period <= MAX_PERIOD:
        raise Invalid("slo.bad_period", f"period must be more than 0 and at most {MAX_PERIOD.days} days",
                      hint="Give the period in days, e.g. 28 or 7.")
    longest = max([period or s.period for s in slos] + list(burn_windows()))
    by_kind: dict[str, list[Slo]] = {}
    for slo in slos:
        by_kind.setdefault(slo.job_kind, []).append(slo)
    # Phase records are JSON documents: read them only for the kinds a phase SLO judges.
    with_phases = sorted({s.job_kind for s in slos if s.phase is not None})
    events: dict[str, list[Event]] = {s.name: [] for s in slos}
    # Table columns, not ORM attributes: in a profile the ORM's per-row loading was a third of the time.
    job = Job.__table__.c  # type: ignore[attr-defined]
    for kinds, phases_col in ((with_phases, job.phases), (sorted(set(by_kind) - set(with_phases)), literal(None))):
        if not kinds:
            continue
        q = select(job.kind, job.status, job.accepted_at, job.finished_at, phases_col, job.restore_passed).where(
            job.kind.in_(kinds), job.status.in_(["succeeded", "failed"]),
            job.finished_at > end - longest, job.finished_at <= end)
        if tenant_id is not None:
            q = q.where(job.tenant_id == tenant_id)
        for kind, status, accepted, finished, phases, restore in session.execute(q).all():
            facts = job_facts(kind=kind, status=status, accepted_at=accepted, finished_at=finished, phases=phases,
                              restore_passed=restore)
            at = as_utc(finished)
            for s in by_kind[kind]:
                verdict = judge(s, facts)
                if verdict is not None:
                    events[s.name].append(Event(at, verdict))
    return [evaluate(s, events[s.name], end=end, period=period) for s in slos]


def status_document(st: SloStatus) -> dict[str, Any]:
    """One SLO's status as plain JSON (the API's answer, the CLI's and the dashboard's data)."""
    slo = st.slo
    return {
        "name": slo.name,
        "description": slo.description,
        "job_kind": slo.job_kind,
        "phase": slo.phase,
        "sli": str(slo.sli),
        "objective": slo.objective,
        "threshold_s": slo.threshold_s,
        "period": window_label(st.end - st.start),
        "start": iso(st.start),
        "end": iso(st.end),
        "events": st.events,
        "good": st.good,
        "bad": st.bad,
        "attainment": st.attainment,
        "budget_events": round(st.budget_events, 3),
        "budget_remaining": round(st.budget_remaining, 4),
        "burn_rates": {window_label(b.window): None if b.rate is None else round(b.rate, 3) for b in st.burns},
        "window_events": {window_label(b.window): {"events": b.events, "bad": b.bad} for b in st.burns},
        "alerts": [{"name": a.alert.name, "severity": a.alert.severity,
                    "long_window": window_label(a.alert.long_window),
                    "short_window": window_label(a.alert.short_window), "factor": a.alert.factor,
                    "long_rate": None if a.long_rate is None else round(a.long_rate, 3),
                    "short_rate": None if a.short_rate is None else round(a.short_rate, 3),
                    "firing": a.firing} for a in st.alerts],
    }


