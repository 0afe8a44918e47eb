"""The SLOs over job history, counted by the database and judged by `core.slo`.

`slo_report(session, end=..., period=...)` is the one call for anyone who needs the numbers (the
API, the dashboard, the service review): a period in, per SLO the events, attainment, error budget
left and the burn rate of every alert window ending at `end`.

The database counts: one scan of the period's finished jobs adds up (events, bad) for every SLO and
window with conditional sums (`core.slo.judge` written as SQL), and a phase SLO reads its phase's
record out of the job's JSON in SQL. No job row travels to Python: over 100,000 jobs this is what
keeps the service review under a second (bench/bench_review.py). `slo_report_by_rows` is the
straightforward version (every row read, `judge` in Python): the reference the tests hold the SQL
to, and the alternative the benchmark times.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, and_, bindparam, case, cast, func, literal, not_, or_, select, text
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from provisioner.core.errors import Invalid
from provisioner.core.slo import (
    DEFAULT_SLOS,
    Event,
    SliKind,
    Slo,
    SloStatus,
    burn_windows,
    evaluate,
    job_facts,
    judge,
    report_windows,
    status_from_counts,
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
    kinds = ("provision", "reimage", "release", "commission")
    return with_targets(DEFAULT_SLOS, {k: settings.slo_seconds(k) for k in kinds})


def _check_period(period: timedelta | None) -> None:
    if period is not None and not timedelta(0) < period <= MAX_PERIOD:
        raise Invalid("slo.bad_period", f"period must be more than 0 and at most {MAX_PERIOD.days} days",
                      hint="Give the period in days, e.g. 28 or 7.")


def _within(slo: Slo, job: Any, dialect: str) -> ColumnElement[bool]:
    """The job took at most the SLO's threshold from acceptance to its end. PostgreSQL compares
    intervals (no per-row epoch arithmetic); SQLite's julianday carries ~0.1 ms of float noise, so
    its seconds are rounded to the millisecond: a job of exactly the threshold stays within it, as
    `judge` says."""
    assert slo.threshold_s is not None
    if dialect == "postgresql":
        return job.finished_at - job.accepted_at <= timedelta(seconds=slo.threshold_s)
    return func.round((func.julianday(job.finished_at) - func.julianday(job.accepted_at)) * 86400.0, 3) <= \
        slo.threshold_s


def _good_sql(slo: Slo, job: Any, dialect: str) -> ColumnElement[bool]:
    """`core.slo.judge` of a whole-job SLO as a SQL condition on a finished (succeeded|failed) job."""
    if slo.sli is SliKind.restore:
        return and_(job.status == "succeeded", job.restore_passed.is_(True))
    return and_(job.status == "succeeded", _within(slo, job, dialect))


# One phase's record of each finished job of a kind: the last one of that name, as `job_facts` keeps
# it. PostgreSQL filters the stored JSONB with a path (OFFSET 0 keeps the planner from inlining the
# subquery and evaluating the path again for every reference); SQLite walks json_each.
_PHASE_SQL = {
    "postgresql": """SELECT x.at AS at, x.e->>'status' AS status,
  CASE WHEN jsonb_typeof(x.e->'duration_s') = 'number' THEN (x.e->>'duration_s')::float8 END AS took
FROM (SELECT j.finished_at AS at, jsonb_path_query_array(
        CASE WHEN jsonb_typeof(j.phases) = 'array' THEN j.phases ELSE '[]'::jsonb END,
        '$[*] ? (@.name == $p)', jsonb_build_object('p', CAST(:phase AS text))) -> -1 AS e
      FROM job j WHERE {where} OFFSET 0) x""",
    "sqlite": """SELECT j.finished_at AS at, json_extract(p.value, '$.status') AS status,
  CASE WHEN json_type(p.value, '$.duration_s') IN ('integer', 'real')
       THEN json_extract(p.value, '$.duration_s') END AS took
FROM job j JOIN json_each(CASE WHEN json_type(j.phases) = 'array' THEN j.phases ELSE '[]' END) p
  ON p.key = (SELECT max(q.key) FROM json_each(j.phases) q WHERE json_extract(q.value, '$.name') = :phase)
WHERE {where}""",
}


def _bucket(at: Any, end: datetime, edges: tuple[timedelta, ...]) -> ColumnElement[Any]:
    """Index of the shortest window (end - edge, end] an instant falls in; NULL beyond the longest.
    The windows nest, so a window's count is the sum of its bucket and the shorter ones'."""
    return case(*[(at > end - e, i) for i, e in enumerate(edges)], else_=None)


Buckets = dict[int, tuple[int, int]]


def _cumulative(buckets: Buckets, edges: tuple[timedelta, ...],
                windows: tuple[timedelta, ...]) -> dict[timedelta, tuple[int, int]]:
    out = {}
    for w in windows:
        k = edges.index(w)
        inside = [buckets.get(i, (0, 0)) for i in range(k + 1)]
        out[w] = (sum(n for n, _ in inside), sum(b for _, b in inside))
    return out


def slo_buckets(session: Session, slos: tuple[Slo, ...], *, end: datetime, edges: tuple[timedelta, ...],
                tenant_id: int | None = None) -> dict[str, Buckets]:
    """Per SLO, (events, bad) per bucket of `edges` (sorted windows ending at `end`), counted by the
    database: one GROUP BY over the finished jobs for every whole-job SLO, one per phase SLO."""
    dialect = session.get_bind().dialect.name
    job = Job.__table__.c  # type: ignore[attr-defined]
    finished = [job.status.in_(["succeeded", "failed"]), job.finished_at > end - edges[-1], job.finished_at <= end]
    if tenant_id is not None:
        finished.append(job.tenant_id == tenant_id)
    out: dict[str, Buckets] = {s.name: {} for s in slos}
    whole = [s for s in slos if s.phase is None]
    if whole:
        bads = [case((and_(job.kind == s.job_kind, not_(_good_sql(s, job, dialect))), 1), else_=0).label(f"bad{i}")
                for i, s in enumerate(whole)]
        sub = select(job.kind.label("kind"), _bucket(job.finished_at, end, edges).label("b"), *bads).where(
            job.kind.in_(sorted({s.job_kind for s in whole})), *finished).subquery()
        q = select(sub.c.kind, sub.c.b, func.count(), *[func.sum(sub.c[f"bad{i}"]) for i in range(len(whole))])
        for kind, bi, n, *bad_sums in session.execute(q.group_by(sub.c.kind, sub.c.b)).all():
            for i, s in enumerate(whole):
                if s.job_kind == kind and bi is not None:
                    out[s.name][int(bi)] = (int(n), int(bad_sums[i]))
    for s in slos:
        if s.phase is None:
            continue
        where = " AND ".join(["j.kind = :kind", "j.status IN ('succeeded', 'failed')", "j.finished_at > :since",
                              "j.finished_at <= :end"] + (["j.tenant_id = :tenant"] if tenant_id is not None else []))
        ts = job.finished_at.type
        phase = text(_PHASE_SQL[dialect].format(where=where)).bindparams(
            bindparam("since", type_=ts), bindparam("end", type_=ts)).columns(
            at=ts, status=job.status.type, took=Float()).subquery("ph")
        assert s.threshold_s is not None
        bad = or_(phase.c.status != "succeeded", phase.c.took.is_(None), cast(phase.c.took, Float) > s.threshold_s)
        b = _bucket(phase.c.at, end, edges)
        q = select(b, func.count(), func.sum(case((bad, 1), else_=0))).where(
            phase.c.status.in_(["succeeded", "failed"])).group_by(b)
        params: dict[str, Any] = {"kind": s.job_kind, "phase": s.phase, "since": end - edges[-1], "end": end}
        if tenant_id is not None:
            params["tenant"] = tenant_id
        for bi, n, nbad in session.execute(q, params).all():
            if bi is not None:
                out[s.name][int(bi)] = (int(n), int(nbad))
    return out


def slo_report(session: Session, *, end: datetime | None = None, period: timedelta | None = None,
               tenant_id: int | None = None, slos: tuple[Slo, ...] | None = None) -> list[SloStatus]:
    """Every SLO over (end - period, end]; `period` defaults to each SLO's own (28 days).
    `tenant_id` narrows to one tenant's jobs (what a customer sees). Counted in SQL."""
    return slo_report_with_previous(session, end=end, period=period, tenant_id=tenant_id, slos=slos,
                                    previous=False)[0]


def slo_report_with_previous(session: Session, *, end: datetime | None = None, period: timedelta | None = None,
                             tenant_id: int | None = None, slos: tuple[Slo, ...] | None = None,
                             previous: bool = True) -> tuple[list[SloStatus], dict[str, tuple[int, int]]]:
    """`slo_report`, and with `previous` also (events, bad) per SLO over the period before, from
    the same scan (the service review's "this period against the one before")."""
    slos = slos if slos is not None else configured_slos(get_settings())
    end = as_utc(end) if end is not None else utcnow()
    _check_period(period)
    windows = {s.name: report_windows(s, period) for s in slos}
    edges = set().union(*windows.values())
    if previous:
        edges |= {2 * (period or s.period) for s in slos}
    ordered = tuple(sorted(edges))
    buckets = slo_buckets(session, slos, end=end, edges=ordered, tenant_id=tenant_id)
    statuses = [status_from_counts(s, _cumulative(buckets[s.name], ordered, windows[s.name]), end=end, period=period)
                for s in slos]
    before: dict[str, tuple[int, int]] = {}
    if previous:
        for s in slos:
            p = period or s.period
            longer = _cumulative(buckets[s.name], ordered, (p, 2 * p))
            before[s.name] = (longer[2 * p][0] - longer[p][0], longer[2 * p][1] - longer[p][1])
    return statuses, before


def slo_report_by_rows(session: Session, *, end: datetime | None = None, period: timedelta | None = None,
                       tenant_id: int | None = None, slos: tuple[Slo, ...] | None = None) -> list[SloStatus]:
    """`slo_report` the straightforward way: every finished job row of the period read and judged in
    Python. The reference the SQL is tested against and the alternative the benchmark times."""
    slos = slos if slos is not None else configured_slos(get_settings())
    end = as_utc(end) if end is not None else utcnow()
    _check_period(period)
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


