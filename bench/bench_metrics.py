"""What one /metrics scrape costs at 1,000 hosts with 28 days of job history, three ways:

- previous: the route before the SLO work (three GROUP BY gauges: hosts, jobs, SLO met);
- tally:    today's route (job/phase histograms, outcomes and SLO events from the running totals
            settle() keeps, plus pools, queue, claims and compliance gauges from the current rows);
- rows:     the same families, with the histograms and counters computed from the job rows at
            scrape time instead of the totals (the alternative to the tally table).

Seeds a fresh database (PostgreSQL by default, `--sqlite` for the embedded one): hosts in four
pools, a compliance verdict on every active host, and per day one compliance check per active host
plus provisions and releases, each job with its phase records. The totals are what settle() would
have added for the same jobs (same `observations()`), bulk-inserted. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from provisioner.core.pipeline import phases_for
from provisioner.core.slo import JobFacts, job_facts
from provisioner.core.timeutil import iso, utcnow
from provisioner.services import job_tally
from provisioner.services.fleet_metrics import DatabaseCollector, state_families, tally_families
from provisioner.services.slo_report import configured_slos, slo_report, status_document
from provisioner.store.config import Settings
from provisioner.store.db import make_engine
from provisioner.store.migrate import upgrade
from provisioner.store.models import Host, Job, JobTally

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
SLOS = configured_slos(Settings())


def seed(eng: Engine, hosts: int, days: int, rnd: random.Random) -> int:
    now = utcnow()
    pools = ["default", "gpu", "storage", "ci"]
    states = ["active"] * 80 + ["available"] * 15 + ["provisioning"] * 3 + ["failed"] * 2
    host_rows = []
    for i in range(hosts):
        state = rnd.choice(states)
        verdict = {}
        if state == "active":
            bad = rnd.random() < 0.03
            verdict = {"compliant": not bad, "checked_at": iso(now), "restore_passed": True,
                       "violations": [{"code": "raid.degraded", "message": "array degraded", "remedy": "replace"}]
                       if bad else [], "waived": []}
        host_rows.append({"name": f"node{i:05d}", "address": f"10.0.{i // 250}.{i % 250}", "port": 22,
                          "ssh_user": "root", "connection": "ssh", "labels": {"rack": f"r{i % 40}"},
                          "pool": pools[i % len(pools)], "driver": "static", "state": state,
                          "hardware": {"cpus": 32, "memory_gb": 256}, "results": {}, "compliance": verdict,
                          "created_at": now, "updated_at": now})
    with eng.begin() as conn:
        conn.execute(insert(Host), host_rows)
    active = max(1, int(hosts * 0.8))
    jobs: list[dict[str, Any]] = []
    tallies: Counter[tuple] = Counter()
    sums: dict[tuple, float] = defaultdict(float)
    for d in range(days):
        per_day = [("compliance", active)] + [("provision", active // 12), ("release", active // 12)]
        for kind, n in per_day:
            for _ in range(n):
                end = now - timedelta(days=d, seconds=rnd.uniform(0, 86_400))
                failed = rnd.random() < 0.01
                phases, t = [], end - timedelta(seconds=60)
                names = [p.name for p in phases_for(kind)]
                took_total = 0.0
                for k, name in enumerate(names):
                    took = rnd.uniform(20, 600 if name == "image" else 120)
                    status = "failed" if failed and k == len(names) - 1 else "succeeded"
                    phases.append({"name": name, "status": status, "started_at": iso(t), "ended_at": None,
                                   "duration_s": round(took, 3), "attempts": 1})
                    took_total += took
                status = "failed" if failed else "succeeded"
                restore_passed = (not failed) if kind == "compliance" else None
                accepted = end - timedelta(seconds=took_total + rnd.uniform(1, 30))
                jobs.append({"kind": kind, "host_id": rnd.randint(1, hosts), "status": status, "attempts": 1,
                             "max_attempts": 2, "accepted_at": accepted, "queued_at": accepted,
                             "started_at": accepted, "finished_at": end, "cancel_requested": False,
                             "phases": phases, "params": {}, "event_count": 40, "sli": {"total_s": took_total},
                             "error_code": "phase_failed" if failed else None,
                             "restore_passed": restore_passed})
                facts = job_facts(kind=kind, status=status, accepted_at=accepted, finished_at=end, phases=phases,
                                  restore_passed=restore_passed)
                for o in job_tally.observations(facts, "phase_failed" if failed else None, SLOS):
                    key = (o.metric, o.kind, o.phase, o.status, o.reason, o.le)
                    tallies[key] += 1
                    sums[key] += o.seconds
    # A few jobs in flight: the queue and running gauges have something to report.
    for i in range(20):
        jobs.append({"kind": "provision", "host_id": i + 1, "status": "queued" if i % 2 else "running",
                     "attempts": 0, "max_attempts": 2, "accepted_at": now, "queued_at": now,
                     "started_at": None if i % 2 else now, "finished_at": None, "cancel_requested": False,
                     "phases": [], "params": {}, "event_count": 0, "sli": {}, "error_code": None,
                     "restore_passed": None})
    with eng.begin() as conn:
        for i in range(0, len(jobs), 5000):
            conn.execute(insert(Job), jobs[i:i + 5000])
        conn.execute(insert(JobTally), [
            {"metric": m, "kind": k, "phase": p, "status": s, "reason": r, "le": le, "count": n,
             "sum_s": sums[(m, k, p, s, r, le)]} for (m, k, p, s, r, le), n in tallies.items()])
    return len(jobs)


def previous(s: Session) -> bytes:
    """The route as it was before this change, verbatim."""
    reg = CollectorRegistry()
    hosts = Gauge("provisioner_hosts", "Hosts by state", ["state"], registry=reg)
    for state, n in s.execute(select(col(Host.state), func.count()).group_by(Host.state)).all():
        hosts.labels(state).set(n)
    jobs = Gauge("provisioner_jobs", "Jobs by kind and status", ["kind", "status"], registry=reg)
    by_kind = select(col(Job.kind), col(Job.status), func.count()).group_by(Job.kind, Job.status)
    for kind, status, n in s.execute(by_kind).all():
        jobs.labels(kind, status).set(n)
    met = Gauge("provisioner_jobs_slo_met", "Finished jobs by kind and SLO outcome", ["kind", "met"], registry=reg)
    for kind, ok, n in s.execute(select(col(Job.kind), col(Job.slo_met), func.count())
                                 .where(col(Job.slo_met).is_not(None)).group_by(Job.kind, col(Job.slo_met))).all():
        met.labels(kind, str(bool(ok)).lower()).set(n)
    return generate_latest(reg)


def tally(s: Session) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DatabaseCollector(s, SLOS, utcnow()))
    return generate_latest(reg)


class RowsCollector(Collector):
    """The histograms and counters recomputed from every finished job row at each scrape."""

    def __init__(self, s: Session) -> None:
        self.s = s

    def collect(self) -> Iterable[Metric]:
        rows: Counter[tuple] = Counter()
        sums: dict[tuple, float] = defaultdict(float)
        q = select(col(Job.kind), col(Job.status), col(Job.error_code), col(Job.accepted_at), col(Job.finished_at),
                   col(Job.phases), col(Job.restore_passed))
        q = q.where(col(Job.status).in_(["succeeded", "failed", "cancelled"]))
        for kind, status, code, accepted, finished, phases, restore in self.s.execute(q):
            facts: JobFacts = job_facts(kind=kind, status=status, accepted_at=accepted, finished_at=finished,
                                        phases=phases, restore_passed=restore)
            for o in job_tally.observations(facts, code, SLOS):
                key = (o.metric, o.kind, o.phase, o.status, o.reason, o.le)
                rows[key] += 1
                sums[key] += o.seconds
        fake = [JobTally(metric=m, kind=k, phase=p, status=st, reason=r, le=le, count=n, sum_s=sums[(m, k, p, st, r,
                         le)]) for (m, k, p, st, r, le), n in rows.items()]
        yield from tally_families(fake, SLOS)
        yield from state_families(self.s, utcnow())


def rows(s: Session) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RowsCollector(s))
    return generate_latest(reg)


def measure(eng: Engine, fn: Callable[[Session], bytes], n: int) -> tuple[float, float, int]:
    times, size = [], 0
    for _ in range(n):
        with Session(eng) as s:
            t0 = time.perf_counter()
            size = len(fn(s))
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], size


def run(url: str, hosts: int, days: int, n: int) -> None:
    eng = make_engine(url)
    upgrade(eng)
    jobs = seed(eng, hosts, days, random.Random(7))
    with Session(eng) as s:
        tally_rows = s.execute(select(func.count()).select_from(JobTally)).scalar_one()
    print(f"{eng.dialect.name}: {hosts} hosts, {jobs:,} jobs over {days} days, {tally_rows} tally rows")
    print(f"{'scrape':<10} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>8}")
    for name, fn, reps in (("previous", previous, n), ("tally", tally, n), ("rows", rows, max(3, n // 10))):
        p50, p95, size = measure(eng, fn, reps)
        print(f"{name:<10} {p50:>8.1f} {p95:>8.1f} {size:>8,}")
    p50, p95, size = measure(eng, lambda s: json.dumps([status_document(st) for st in slo_report(
        s, slos=SLOS)]).encode(), max(3, n // 4))
    print(f"{'slo report':<10} {p50:>8.1f} {p95:>8.1f} {size:>8,}   (GET /v1/slo: 28 days, counted in SQL)")
    eng.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--scrapes", type=int, default=30)
    ap.add_argument("--sqlite", action="store_true", help="the embedded database instead of PostgreSQL")
    args = ap.parse_args()
    if args.sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.hosts, args.days, args.scrapes)
        return
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        run(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", args.hosts, args.days, args.scrapes)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
