"""The service review and the weekly production-meeting summary, from live data.

`review(session, end=..., period=...)` answers the SRE book's periodic questions over a period
(28 days by default): SLOs with budget left, people and hardware (fleet by state and pool),
progress against the service's goals (its SLOs, this period against the one before), data
integrity (restore tests), toil, capacity plans, the customers' ratings and open escalations, a
maturity matrix and the data catalogue. `weekly(...)` is the meeting's page: what changed, top
failure reasons, open escalations.

Every number is a COUNT/SUM with GROUP BY in the database (the SLOs too: `slo_report`); no job row
is loaded into Python, so the review costs the same few queries at 1,000 or 100,000 jobs.
`tenant_id` narrows everything a customer may see to their tenant; pool capacity is the operators'.

What toil counts, and from where (also in the document's `counted`):
* failed jobs: `job` rows of the period with status failed (each leaves a host for an operator);
* retried jobs: finished `job` rows of the period with attempts > 1 (a worker died or a phase was retried);
* manual host moves: `auditentry` rows `host.state` written by a person (actor_id set) in the period;
* waivers granted: `waiver` rows decided in the period that were approved (or approved, then revoked);
* escalations opened: `rating` rows of the period with an escalation;
* alerts fired: not stored by the service (Alertmanager keeps them); the review lists the burn-rate
  alert pairs firing at the end of the period instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import case, func, select
from sqlmodel import Session

from provisioner.core import capacity, maturity
from provisioner.core.errors import Invalid
from provisioner.core.slo import SloStatus, window_label
from provisioner.core.timeutil import as_utc, iso, utcnow
from provisioner.services import ratings
from provisioner.services.slo_report import slo_report, slo_report_with_previous, status_document
from provisioner.store.data_catalogue import CATALOGUE
from provisioner.store.guardrail_models import Waiver
from provisioner.store.image_models import Image
from provisioner.store.models import AuditEntry, Host, Job
from provisioner.store.notify_models import Rating

DEFAULT_PERIOD = timedelta(days=28)
WEEK = timedelta(days=7)
MAX_PERIOD = timedelta(days=400)
# How many rows the lists of a review show (oldest restores, failure reasons, changes, escalations).
TOP = 10
ALERT_RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "alerts.yml"

# Table columns: the queries are SQL expressions, not ORM loads.
JOB_TABLE = Job.__table__  # type: ignore[attr-defined]
HOST_TABLE = Host.__table__  # type: ignore[attr-defined]
JOB, HOST = JOB_TABLE.c, HOST_TABLE.c
AUDIT = AuditEntry.__table__.c  # type: ignore[attr-defined]
WAIVER = Waiver.__table__.c  # type: ignore[attr-defined]
RATING = Rating.__table__.c  # type: ignore[attr-defined]
IMAGE = Image.__table__.c  # type: ignore[attr-defined]

COUNTED = {
    "failed_jobs": "job rows finished in the period with status failed",
    "retried_jobs": "job rows finished in the period with attempts > 1",
    "manual_host_moves": "auditentry rows 'host.state' with a person as actor in the period",
    "waivers_granted": "waiver rows decided in the period with status approved or revoked",
    "escalations_opened": "rating rows created in the period with an escalation",
    "alerts_fired": "not stored by the service (Alertmanager keeps them): burn alerts firing at the end instead",
}


def check_period(period: timedelta) -> None:
    if not timedelta(0) < period <= MAX_PERIOD:
        raise Invalid("review.bad_period", f"the period must be more than 0 and at most {MAX_PERIOD.days} days",
                      hint="Give it in days, e.g. 28 (the review) or 7 (the weekly summary).")


def _utc_day(ts: Any, dialect: str) -> Any:
    return func.date(func.timezone("UTC", ts)) if dialect == "postgresql" else func.date(ts)


def _as_date(v: Any) -> date:
    return v if isinstance(v, date) else date.fromisoformat(str(v))


def _finished(job: Any, start: datetime, end: datetime, tenant_id: int | None) -> list[Any]:
    out = [job.finished_at > start, job.finished_at <= end]
    if tenant_id is not None:
        out.append(job.tenant_id == tenant_id)
    return out


def _slo_section(statuses: list[SloStatus], before: dict[str, tuple[int, int]]) -> dict[str, Any]:
    docs = [status_document(st) for st in statuses]
    goals = []
    for st in statuses:
        n, bad = before.get(st.slo.name, (0, 0))
        goals.append({
            "goal": st.slo.name, "description": st.slo.description, "objective": st.slo.objective,
            "attainment": st.attainment, "previous_attainment": None if n == 0 else (n - bad) / n,
            "met": None if st.attainment is None else st.attainment >= st.slo.objective,
            "budget_remaining": round(st.budget_remaining, 4),
        })
    measured = [g for g in goals if g["met"] is not None]
    return {
        "slos": docs,
        "goals": goals,
        "defined": len(goals),
        "measured": len(measured),
        "met": sum(1 for g in measured if g["met"]),
        "alerts_firing": [{"slo": d["name"], "alert": a["name"], "severity": a["severity"]}
                          for d in docs for a in d["alerts"] if a["firing"]],
    }


@dataclass(frozen=True)
class Group:
    """Finished jobs of one kind, status and restore outcome, retried or not, in the period or the one before."""

    current: bool
    kind: str
    status: str
    restore_passed: bool | None
    retried: bool
    n: int


def job_groups(s: Session, start: datetime, end: datetime, tenant_id: int | None,
               since: datetime | None = None) -> list[Group]:
    """One GROUP BY over the jobs finished in (since or start, end]: everything the review counts
    about finished jobs (by kind and status, restore tests, failed and retried) in one scan."""
    job = JOB
    cur = (job.finished_at > start).label("cur")
    retried = (job.attempts > 1).label("retried")
    q = select(cur, job.kind, job.status, job.restore_passed, retried, func.count()).where(
        *_finished(job, since or start, end, tenant_id))
    q = q.group_by(cur, job.kind, job.status, job.restore_passed, retried)
    return [Group(bool(c), k, st, None if r is None else bool(r), bool(rt), int(n))
            for c, k, st, r, rt, n in s.execute(q).all()]


def _jobs(s: Session, groups: list[Group], tenant_id: int | None) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {}
    for g in groups:
        if g.current:
            counts = by_kind.setdefault(g.kind, {})
            counts[g.status] = counts.get(g.status, 0) + g.n
    live = select(JOB.status, func.count()).where(JOB.status.in_(["queued", "running"])).group_by(JOB.status)
    if tenant_id is not None:
        live = live.where(JOB.tenant_id == tenant_id)
    return {"finished": sum(g.n for g in groups if g.current), "by_kind": by_kind,
            "live": {st: int(n) for st, n in s.execute(live).all()}}


def _fleet(s: Session, tenant_id: int | None) -> dict[str, Any]:
    host = HOST
    q = select(host.pool, host.state, func.count()).group_by(host.pool, host.state)
    if tenant_id is not None:
        q = q.where(host.tenant_id == tenant_id)
    by_state: dict[str, int] = {}
    pools: dict[str, dict[str, int]] = {}
    for pool, state, n in s.execute(q).all():
        by_state[state] = by_state.get(state, 0) + int(n)
        pools.setdefault(pool, {})[state] = int(n)
    by_pool = []
    for pool in sorted(pools):
        cap = sum(n for st, n in pools[pool].items() if st in capacity.CAPACITY_STATES)
        use = sum(n for st, n in pools[pool].items() if st in capacity.IN_USE_STATES)
        by_pool.append({"pool": pool, "hosts": sum(pools[pool].values()), "capacity": cap, "in_use": use,
                        "utilisation": None if cap == 0 else round(use / cap, 4), "by_state": pools[pool]})
    return {"hosts": sum(by_state.values()), "by_state": by_state, "by_pool": by_pool}


def _integrity(s: Session, groups: list[Group], start: datetime, tenant_id: int | None,
               hosts_in_use: int) -> dict[str, Any]:
    """Restore tests of the period and how recently the hosts in use last passed one; `hosts_in_use`
    is the fleet's count (one query fewer, and the two sections cannot disagree)."""
    host = HOST
    passed = sum(g.n for g in groups if g.current and g.restore_passed is True)
    failed = sum(g.n for g in groups if g.current and g.restore_passed is False)
    in_use = [host.state.in_(sorted(capacity.IN_USE_STATES))]
    if tenant_id is not None:
        in_use.append(host.tenant_id == tenant_id)
    never = s.execute(select(func.count()).where(*in_use, host.last_restore_at.is_(None))).scalar_one()
    recent = s.execute(select(func.count(), func.coalesce(func.sum(case((host.last_restore_passed.is_(True), 1),
                                                                         else_=0)), 0))
                       .where(*in_use, host.last_restore_at > start)).one()
    oldest = s.execute(select(host.name, host.pool, host.last_restore_at, host.last_restore_passed)
                       .where(*in_use).order_by(host.last_restore_at.is_not(None), host.last_restore_at, host.name)
                       .limit(TOP)).all()
    return {
        "restore_tests": {"run": passed + failed, "passed": passed, "failed": failed},
        "hosts_in_use": hosts_in_use,
        "hosts_never_restored": int(never),
        "hosts_restored_in_period": int(recent[0]),
        "hosts_restored_in_period_passed": int(recent[1]),
        "oldest_last_restore": [{"host": n, "pool": p, "last_restore_at": iso(at) if at else None,
                                 "passed": ok} for n, p, at, ok in oldest],
    }


def toil(s: Session, groups: list[Group], start: datetime, end: datetime, tenant_id: int | None,
         current: bool = True) -> dict[str, Any]:
    """Toil over (start, end]; the job counts from `groups` (those of `current`)."""
    failed = sum(g.n for g in groups if g.current is current and g.status == "failed")
    retried = sum(g.n for g in groups if g.current is current and g.retried)
    moves = select(func.count()).where(AUDIT.action == "host.state", AUDIT.actor_id.is_not(None), AUDIT.at > start,
                                       AUDIT.at <= end)
    waivers = select(func.count()).where(WAIVER.status.in_(["approved", "revoked"]), WAIVER.decided_at > start,
                                         WAIVER.decided_at <= end)
    esc = select(func.count()).where(RATING.escalation.is_not(None), RATING.created_at > start,
                                     RATING.created_at <= end)
    if tenant_id is not None:
        moves = moves.where(AUDIT.tenant_id == tenant_id)
        waivers = waivers.where(WAIVER.tenant_id == tenant_id)
        esc = esc.where(RATING.tenant_id == tenant_id)
    out = {"failed_jobs": int(failed), "retried_jobs": int(retried),
           "manual_host_moves": int(s.execute(moves).scalar_one()),
           "waivers_granted": int(s.execute(waivers).scalar_one()),
           "escalations_opened": int(s.execute(esc).scalar_one())}
    out["total"] = sum(out.values())
    return out


def _capacity(s: Session, fleet: dict[str, Any], start: datetime, end: datetime) -> list[dict[str, Any]]:
    job, host = JOB, HOST
    dialect = s.get_bind().dialect.name
    day = _utc_day(job.finished_at, dialect)
    taken = case((job.kind == "provision", 1), else_=-1)
    q = select(host.pool, day, func.sum(taken)).select_from(JOB_TABLE.join(HOST_TABLE, job.host_id == host.id))
    rows = s.execute(q.where(job.status == "succeeded", job.kind.in_(["provision", "release"]),
                             *_finished(job, start, end, None)).group_by(host.pool, day)).all()
    net: dict[str, dict[date, int]] = {}
    for pool, d, n in rows:
        net.setdefault(pool, {})[_as_date(d)] = int(n)
    today = end.date()
    first = (start + timedelta(days=1)).date() if start.date() < today else today
    out = []
    for p in fleet["by_pool"]:
        plan = capacity.plan(p["pool"], p["capacity"], p["in_use"], net.get(p["pool"], {}), first, today)
        out.append({"pool": plan.pool, "capacity": plan.capacity, "in_use": plan.in_use,
                    "utilisation": None if plan.utilisation is None else round(plan.utilisation, 4),
                    "rate_per_day": None if plan.rate_per_day is None else round(plan.rate_per_day, 4),
                    "days_left": None if plan.days_left is None else round(plan.days_left, 1),
                    "runs_out_on": plan.runs_out_on.isoformat() if plan.runs_out_on else None,
                    "series": [[d.isoformat(), n] for d, n in plan.series]})
    return out


def _open_escalations(s: Session, end: datetime, tenant_id: int | None) -> list[dict[str, Any]]:
    q = select(RATING.id, RATING.request_id, RATING.tenant_id, RATING.score, RATING.created_at).where(
        RATING.escalation == "open").order_by(RATING.created_at, RATING.id).limit(TOP)
    if tenant_id is not None:
        q = q.where(RATING.tenant_id == tenant_id)
    return [{"rating_id": i, "request_id": r, "tenant_id": t, "score": sc, "opened": iso(at),
             "age_days": round((end - as_utc(at)).total_seconds() / 86400, 1)}
            for i, r, t, sc, at in s.execute(q).all()]


def _alert_rules() -> tuple[int, int]:
    """(alert rules shipped, of them on SLO burn) from ops/prometheus/alerts.yml; (0, 0) without it."""
    try:
        doc = yaml.safe_load(ALERT_RULES.read_text())
    except (OSError, yaml.YAMLError):
        return 0, 0
    groups = doc.get("groups") if isinstance(doc, dict) else None
    rules = [r for g in groups or [] if isinstance(g, dict) for r in g.get("rules") or [] if isinstance(r, dict)]
    alerts = [r for r in rules if "alert" in r]
    # An alert on SLO burn reads a burn_rate series (the recording rules Prometheus evaluates first).
    return len(alerts), sum(1 for r in alerts if "burn_rate" in str(r.get("expr", "")))


def _catalogue() -> list[dict[str, Any]]:
    return [{"table": e.table, "holds": e.holds, "retention": e.retention, "regenerated": e.regenerated,
             "personal_data": list(e.personal)} for e in CATALOGUE]


def review(s: Session, *, end: datetime | None = None, period: timedelta = DEFAULT_PERIOD,
           tenant_id: int | None = None) -> dict[str, Any]:
    """The service review over (end - period, end] as a JSON-ready document."""
    check_period(period)
    end = as_utc(end) if end is not None else utcnow()
    start = end - period
    slo = _slo_section(*slo_report_with_previous(s, end=end, period=period, tenant_id=tenant_id))
    fleet = _fleet(s, tenant_id)
    groups = job_groups(s, start, end, tenant_id, since=start - period)
    integrity = _integrity(s, groups, start, tenant_id, sum(p["in_use"] for p in fleet["by_pool"]))
    work = toil(s, groups, start, end, tenant_id)
    before = toil(s, groups, start - period, start, tenant_id, current=False)
    plans = _capacity(s, fleet, start, end) if tenant_id is None else None
    rules, burn_rules = _alert_rules()
    facts = maturity.Facts(
        slos_defined=slo["defined"], slos_with_events=slo["measured"], slos_met=slo["met"], alert_rules=rules,
        burn_alert_rules=burn_rules, hosts_in_use=integrity["hosts_in_use"],
        restores_recent=integrity["hosts_restored_in_period"],
        restores_recent_passed=integrity["hosts_restored_in_period_passed"],
        pools=len(fleet["by_pool"]),
        pools_planned=None if plans is None else sum(1 for p in plans if p["series"]),
        pools_running_out_soon=0 if plans is None else sum(
            1 for p in plans if p["days_left"] is not None and p["days_left"] < 30),
        toil_now=work["total"], toil_before=before["total"])
    return {
        "period": {"start": iso(start), "end": iso(end), "days": round(period / timedelta(days=1), 3),
                   "label": window_label(period)},
        "tenant_id": tenant_id,
        "slo": slo,
        "jobs": _jobs(s, groups, tenant_id),
        "fleet": fleet,
        "integrity": integrity,
        "toil": {**work, "previous_period_total": before["total"], "counted": COUNTED},
        "capacity": plans,
        "ratings": ratings.summary(s, since=start, until=end, tenant_id=tenant_id),
        "open_escalations": _open_escalations(s, end, tenant_id),
        "maturity": [{"area": r.area, "level": r.level, "label": r.label, "evidence": r.evidence}
                     for r in maturity.score(facts)],
        "catalogue": _catalogue(),
    }


def _changes(s: Session, start: datetime, end: datetime) -> dict[str, Any]:
    q = select(AUDIT.at, AUDIT.actor_name, AUDIT.action, AUDIT.object_id, AUDIT.before, AUDIT.after).where(
        AUDIT.action.in_(["image.promote", "policy.update"]), AUDIT.at > start, AUDIT.at <= end).order_by(
        AUDIT.at, AUDIT.id).limit(5 * TOP)
    images: list[dict[str, Any]] = []
    policy: list[dict[str, Any]] = []
    names: dict[int, str] = {}
    rows = s.execute(q).all()
    ids = [int(o) for _, _, a, o, _, _ in rows if a == "image.promote" and o and str(o).isdigit()]
    if ids:
        names = {i: f"{n} {v}" for i, n, v in s.execute(select(IMAGE.id, IMAGE.name, IMAGE.version)
                                                         .where(IMAGE.id.in_(ids))).all()}
    for at, actor, action, obj, before, after in rows:
        if action == "image.promote":
            images.append({"at": iso(at), "by": actor, "image_id": obj,
                           "image": names.get(int(obj)) if obj and str(obj).isdigit() else None,
                           "from": (before or {}).get("channel"), "to": (after or {}).get("channel"),
                           "reason": (after or {}).get("reason")})
        else:
            policy.append({"at": iso(at), "by": actor, "version": (after or {}).get("version")})
    return {"images": images, "policy": policy}


def _top_failures(s: Session, start: datetime, end: datetime, tenant_id: int | None) -> list[dict[str, Any]]:
    job = JOB
    reason = func.coalesce(job.error_code, "unknown")
    n = func.count()
    rows = s.execute(select(job.kind, reason, n).where(job.status == "failed", *_finished(job, start, end, tenant_id))
                     .group_by(job.kind, reason).order_by(n.desc(), job.kind, reason).limit(TOP)).all()
    return [{"kind": k, "reason": r, "count": int(c)} for k, r, c in rows]


def weekly(s: Session, *, end: datetime | None = None, period: timedelta = WEEK,
           tenant_id: int | None = None) -> dict[str, Any]:
    """The production meeting's summary over (end - period, end] (a week by default)."""
    check_period(period)
    end = as_utc(end) if end is not None else utcnow()
    start = end - period
    slos = slo_report(s, end=end, period=period, tenant_id=tenant_id)
    groups = job_groups(s, start, end, tenant_id)
    return {
        "period": {"start": iso(start), "end": iso(end), "days": round(period / timedelta(days=1), 3),
                   "label": window_label(period)},
        "tenant_id": tenant_id,
        "jobs": _jobs(s, groups, tenant_id),
        "slo": [{"name": st.slo.name, "events": st.events, "bad": st.bad, "attainment": st.attainment,
                 "objective": st.slo.objective, "budget_remaining": round(st.budget_remaining, 4),
                 "firing": [a.alert.name for a in st.alerts if a.firing]} for st in slos],
        "changes": _changes(s, start, end),
        "top_failures": _top_failures(s, start, end, tenant_id),
        "toil": toil(s, groups, start, end, tenant_id),
        "open_escalations": _open_escalations(s, end, tenant_id),
    }
