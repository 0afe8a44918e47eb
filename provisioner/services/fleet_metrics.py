"""What /metrics reports about jobs, hosts and SLOs, read from the database at scrape time.

The database is the one source of truth and several processes (API, workers) change it, so these
families are the same whichever API process Prometheus scrapes: the job and phase histograms and
the outcome and SLO event counters are the running totals settle() keeps (`JobTally`, one small
table), the rest are gauges of the current rows. Per-process metrics (HTTP) live at the edge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlmodel import Session, col

from provisioner.core.slo import Slo
from provisioner.core.timeutil import as_utc
from provisioner.services import job_tally
from provisioner.services.job_tally import BUCKETS, le_label
from provisioner.store.models import Host, Job, JobTally

LE_ORDER = [le_label(b) for b in BUCKETS] + ["+Inf"]


def _histogram(name: str, doc: str, labels: list[str],
               rows: Iterable[tuple[tuple[str, ...], str, int, float]]) -> HistogramMetricFamily:
    """rows: (label values, bucket bound, count in that bucket alone, sum) -> cumulative buckets."""
    per: dict[tuple[str, ...], tuple[dict[str, int], list[float]]] = defaultdict(lambda: (defaultdict(int), [0.0]))
    for key, le, n, s in rows:
        counts, total = per[key]
        counts[le] += n
        total[0] += s
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for key in sorted(per):
        counts, total = per[key]
        acc = 0
        buckets = []
        for le in LE_ORDER:
            acc += counts.get(le, 0)
            buckets.append((le, float(acc)))
        fam.add_metric(list(key), buckets, total[0])
    return fam


def tally_families(tallies: Iterable[JobTally], slos: Iterable[Slo]) -> list[Metric]:
    jobs, phases = [], []
    outcomes: dict[tuple[str, str, str], int] = defaultdict(int)
    events: dict[tuple[str, str], int] = defaultdict(int)
    for t in tallies:
        if t.metric == "job":
            jobs.append(((t.kind, t.status), t.le, t.count, t.sum_s))
            outcomes[(t.kind, t.status, t.reason)] += t.count
        elif t.metric == "phase":
            phases.append(((t.kind, t.phase, t.status), t.le, t.count, t.sum_s))
        elif t.metric == "slo":
            events[(t.kind, t.status)] += t.count
    out: list[Metric] = [
        _histogram("provisioner_job_duration_seconds",
                   "Finished jobs: seconds from the request's acceptance to the job's end", ["kind", "status"], jobs),
        _histogram("provisioner_phase_duration_seconds", "Finished phases of jobs: seconds, all attempts",
                   ["kind", "phase", "status"], phases),
    ]
    fam = CounterMetricFamily("provisioner_jobs_finished", "Finished jobs by kind, status and failure reason "
                              "(the job's error_code)", labels=["kind", "status", "reason"])
    for (kind, status, reason), n in sorted(outcomes.items()):
        fam.add_metric([kind, status, reason], n)
    out.append(fam)
    fam = CounterMetricFamily("provisioner_slo_events", "Jobs judged by an SLO, good or bad", labels=["slo", "outcome"])
    obj = GaugeMetricFamily("provisioner_slo_objective", "Share of an SLO's events that must be good",
                            labels=["slo"])
    for slo in slos:
        obj.add_metric([slo.name], slo.objective)
        for outcome in ("good", "bad"):
            # Both series always exist, so a ratio over them is 0, not absent, before the first bad event.
            fam.add_metric([slo.name, outcome], events.get((slo.name, outcome), 0))
    out += [fam, obj]
    return out


def state_families(session: Session, now: datetime) -> list[Metric]:
    out: list[Metric] = []
    pools = GaugeMetricFamily("provisioner_pool_hosts", "Hosts by pool and state", labels=["pool", "state"])
    by_state: dict[str, int] = defaultdict(int)
    for pool, state, n in session.execute(
            select(col(Host.pool), col(Host.state), func.count()).group_by(col(Host.pool), col(Host.state))).all():
        pools.add_metric([pool, state], n)
        by_state[state] += n
    hosts = GaugeMetricFamily("provisioner_hosts", "Hosts by state", labels=["state"])
    for state, n in sorted(by_state.items()):
        hosts.add_metric([state], n)
    out += [hosts, pools]

    # Live jobs only: counting every finished job grouped by kind and status scanned the whole job
    # table per scrape; finished jobs are provisioner_jobs_finished_total, from the totals.
    jobs = GaugeMetricFamily("provisioner_jobs", "Live jobs by kind and status (queued: the queue depth; running)",
                             labels=["kind", "status"])
    oldest = GaugeMetricFamily("provisioner_job_oldest_seconds", "Age of the oldest queued job (since queued) and "
                               "running job (since started), by kind", labels=["kind", "status"])
    expired = GaugeMetricFamily("provisioner_jobs_claim_expired", "Running jobs whose worker's claim has expired "
                                "(the reconciler should settle or retry them within seconds)", labels=["kind"])
    live = session.execute(
        select(col(Job.kind), col(Job.status), func.count(), func.min(col(Job.queued_at)),
               func.min(col(Job.started_at)), func.count(case((col(Job.claim_until) < now, 1))))
        .where(col(Job.status).in_(["queued", "running"])).group_by(col(Job.kind), col(Job.status))).all()
    for kind, status, n, first_queued, first_started, n_expired in sorted(live):
        jobs.add_metric([kind, status], n)
        oldest.add_metric([kind, status], _age(now, first_queued if status == "queued" else first_started))
        if status == "running":
            expired.add_metric([kind], n_expired)
    out += [jobs, oldest, expired]
    out += compliance_families(session)
    return out


def compliance_families(session: Session) -> list[Metric]:
    states = {"compliant": 0, "noncompliant": 0, "unchecked": 0}
    codes: dict[str, int] = defaultdict(int)
    for (verdict,) in session.execute(select(col(Host.compliance)).where(col(Host.state) == "active")).all():
        verdict = verdict or {}
        if "compliant" not in verdict:
            states["unchecked"] += 1
            continue
        states["compliant" if verdict["compliant"] else "noncompliant"] += 1
        for v in verdict.get("violations") or []:
            if isinstance(v, dict) and v.get("code"):
                codes[str(v["code"])] += 1
    fam = GaugeMetricFamily("provisioner_compliance_hosts", "Active hosts by compliance verdict", labels=["state"])
    for state, n in states.items():
        fam.add_metric([state], n)
    viol = GaugeMetricFamily("provisioner_compliance_violations", "Active hosts with an unwaived violation, by code",
                             labels=["code"])
    for code, n in sorted(codes.items()):
        viol.add_metric([code], n)
    return [fam, viol]


def _age(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else max((now - as_utc(since)).total_seconds(), 0.0)


class DatabaseCollector(Collector):
    """A collector over one session, for a registry built per scrape."""

    def __init__(self, session: Session, slos: Iterable[Slo], now: datetime) -> None:
        self.session = session
        self.slos = tuple(slos)
        self.now = now

    def collect(self) -> Iterator[Metric]:
        yield from tally_families(job_tally.read(self.session), self.slos)
        yield from state_families(self.session, self.now)

