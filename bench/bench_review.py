"""What the 28-day service review costs over 100,000 jobs, against the naive way, in the same run.

Seeds a fresh database (PostgreSQL by default, `--sqlite` for the embedded one) with COPY: 1,000
hosts in four pools, `--jobs` finished jobs spread over `--days` days (compliance checks, provisions
and releases with their phase records, ~2 % failed, some retried), a few hundred audit entries,
waivers and ratings. Then times, each `--runs` times (p50, p95):

- review:  `services.service_review.review()` over 28 days: every number a COUNT/SUM in SQL;
- weekly:  `services.service_review.weekly()` over 7 days;
- naive:   the same review's job-derived numbers computed by loading the period's job rows into
           Python (the SLOs with `slo_report_by_rows`, this period and the one before; jobs by kind,
           toil, restore tests and the capacity series from the rows), the small tables as in review.
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from provisioner.core.pipeline import phases_for
from provisioner.core.timeutil import as_utc, iso, utcnow
from provisioner.services import service_review
from provisioner.services.slo_report import slo_report_by_rows
from provisioner.store.db import make_engine
from provisioner.store.guardrail_models import Waiver
from provisioner.store.migrate import upgrade
from provisioner.store.models import AuditEntry, Host, HostRequest, Job, Tenant, User
from provisioner.store.notify_models import Rating

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
JOB_COLUMNS = ("kind", "host_id", "tenant_id", "status", "attempts", "max_attempts", "accepted_at", "queued_at",
               "started_at", "finished_at", "cancel_requested", "phases", "params", "event_count", "sli",
               "error_code", "restore_passed")


def _jobs(n: int, days: int, hosts: int, tenants: list[int], now: datetime, rnd: random.Random) -> list[tuple]:
    out = []
    kinds = ["compliance"] * 6 + ["provision"] * 2 + ["release"] * 2
    names = {k: [p.name for p in phases_for(k)] for k in ("compliance", "provision", "release")}
    for _ in range(n):
        kind = rnd.choice(kinds)
        end = now - timedelta(seconds=rnd.uniform(0, days * 86_400))
        failed = rnd.random() < 0.02
        phases, total = [], 0.0
        for k, name in enumerate(names[kind]):
            took = rnd.uniform(20, 900 if name == "image" else 120)
            status = "failed" if failed and k == len(names[kind]) - 1 else "succeeded"
            phases.append({"name": name, "status": status, "started_at": iso(end), "ended_at": None,
                           "duration_s": round(took, 3), "attempts": 1})
            total += took
        accepted = end - timedelta(seconds=total + rnd.uniform(1, 30))
        out.append((kind, rnd.randint(1, hosts), rnd.choice(tenants), "failed" if failed else "succeeded",
                    2 if rnd.random() < 0.01 else 1, 2, accepted, accepted, accepted, end, False, json.dumps(phases),
                    "{}", 40, json.dumps({"total_s": total}), "phase_failed" if failed else None,
                    (not failed) if kind == "compliance" else None))
    return out


def seed(eng: Engine, hosts: int, jobs: int, days: int, rnd: random.Random) -> None:
    now = utcnow()
    pools = ["default", "gpu", "storage", "ci"]
    states = ["active"] * 70 + ["available"] * 22 + ["provisioning"] * 3 + ["failed"] * 2 + ["maintenance"] * 3
    with Session(eng) as s:
        ts = [Tenant(name=f"t{i}") for i in range(10)]
        s.add_all(ts)
        s.flush()
        tenants = [t.id or 0 for t in ts]
        u = User(name="cust", role="customer", tenant_id=tenants[0])
        s.add(u)
        s.commit()
        uid = u.id or 0
    with eng.begin() as conn:
        conn.execute(insert(Host), [
            {"name": f"node{i:05d}", "address": "192.0.2.1", "port": 22, "ssh_user": "root", "connection": "ssh",
             "labels": {}, "pool": pools[i % 4], "driver": "static", "state": (st := rnd.choice(states)),
             "hardware": {}, "results": {}, "compliance": {}, "tenant_id": rnd.choice(tenants) if st == "active"
             else None, "last_restore_at": now - timedelta(days=rnd.uniform(0, 40)) if st == "active" else None,
             "last_restore_passed": rnd.random() > 0.01 if st == "active" else None, "created_at": now,
             "updated_at": now} for i in range(hosts)])
        conn.execute(insert(AuditEntry), [
            {"at": now - timedelta(days=rnd.uniform(0, days)), "actor_id": uid if i % 2 else None, "actor_name": "x",
             "action": rnd.choice(["host.state", "image.promote", "policy.update", "request.create"]),
             "object_type": "x", "object_id": "1", "before": {}, "after": {}} for i in range(500)])
        conn.execute(insert(Waiver), [
            {"code": "raid.missing", "scope": "tenant:t0", "tenant_id": rnd.choice(tenants), "justification": "x",
             "requested_by": uid, "status": rnd.choice(["approved", "rejected", "requested"]),
             "decided_at": now - timedelta(days=rnd.uniform(0, days)), "decision_note": ""} for _ in range(100)])
        inserted = conn.execute(insert(HostRequest).returning(HostRequest.id), [  # type: ignore[call-overload]
            {"tenant_id": rnd.choice(tenants), "requested_by": uid, "image": None, "count": 1, "pool": "default",
             "constraints": {}, "params": {}, "status": "ready", "accepted_at": now} for _ in range(300)])
        reqs = inserted.scalars().all()
        conn.execute(insert(Rating), [
            {"request_id": r, "tenant_id": tenants[0], "user_id": uid, "score": (sc := rnd.randint(1, 5)),
             "comment": "", "created_at": now - timedelta(days=rnd.uniform(0, days)),
             "escalation": "open" if sc <= 2 else None} for r in reqs])
    rows = _jobs(jobs, days, hosts, tenants, now, rnd)
    if eng.dialect.name == "postgresql":
        raw = eng.raw_connection()
        try:
            with raw.cursor() as cur, cur.copy(f"COPY job ({', '.join(JOB_COLUMNS)}) FROM STDIN") as cp:  # type: ignore[attr-defined]
                for r in rows:
                    cp.write_row(r)
            raw.commit()
        finally:
            raw.close()
    else:
        with eng.begin() as conn:
            for i in range(0, len(rows), 5000):
                conn.execute(insert(Job), [dict(zip(JOB_COLUMNS, r, strict=True)) | {
                    "phases": json.loads(r[11]), "params": {}, "sli": json.loads(r[14])} for r in rows[i:i + 5000]])
    with eng.begin() as conn:
        if eng.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")


def naive(s: Session, end: datetime, period: timedelta) -> dict[str, Any]:
    """The review's job-derived numbers from the rows, in Python; the small tables as the review does."""
    start = end - period
    slos = slo_report_by_rows(s, end=end, period=period)
    before = slo_report_by_rows(s, end=start, period=period)
    job, host = Job.__table__.c, Host.__table__.c  # type: ignore[attr-defined]
    rows = s.execute(select(job.kind, job.status, job.attempts, job.restore_passed, job.finished_at, host.pool)
                     .select_from(Job.__table__.join(Host.__table__, job.host_id == host.id))  # type: ignore[attr-defined]
                     .where(job.finished_at > start - period, job.finished_at <= end)).all()
    by_kind: Counter[tuple[str, str]] = Counter()
    toil: Counter[str] = Counter()
    restores: Counter[bool] = Counter()
    net: Counter[tuple[str, str]] = Counter()
    for kind, status, attempts, restore, finished, pool in rows:
        now_period = as_utc(finished) > start
        if not now_period:
            toil["before"] += status == "failed"
            continue
        by_kind[(kind, status)] += 1
        toil["failed"] += status == "failed"
        toil["retried"] += attempts > 1
        if restore is not None:
            restores[bool(restore)] += 1
        if status == "succeeded" and kind in ("provision", "release"):
            net[(pool, as_utc(finished).date().isoformat())] += 1 if kind == "provision" else -1
    fleet = service_review._fleet(s, None)
    return {"slos": [st.events for st in slos], "before": [st.events for st in before], "jobs": len(by_kind),
            "toil": dict(toil), "restores": dict(restores), "net": len(net), "fleet": fleet["hosts"],
            "integrity": service_review._integrity(s, [], start, None,
                                                   sum(p["in_use"] for p in fleet["by_pool"]))["hosts_in_use"],
            "ratings": service_review.ratings.summary(s, since=start, until=end)}


def measure(eng: Engine, fn: Callable[[Session], Any], n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        with Session(eng) as s:
            t0 = time.perf_counter()
            fn(s)
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]


def run(url: str, hosts: int, jobs: int, days: int, n: int, profile: bool = False) -> None:
    eng = make_engine(url)
    upgrade(eng)
    t0 = time.perf_counter()
    seed(eng, hosts, jobs, days, random.Random(7))
    end = utcnow()
    print(f"{eng.dialect.name}: {hosts} hosts, {jobs:,} jobs over {days} days, seeded in "
          f"{time.perf_counter() - t0:.1f} s")
    with Session(eng) as s:
        if profile:
            import cProfile
            import pstats
            cProfile.runctx("service_review.review(s, end=end)", globals(), locals(), "/tmp/review.prof")
            pstats.Stats("/tmp/review.prof").sort_stats("cumulative").print_stats(25)
        doc = service_review.review(s, end=end)
        in_period = doc["jobs"]["finished"]
        print(f"28-day review: {in_period:,} jobs in the period, {sum(d['events'] for d in doc['slo']['slos']):,} "
              f"SLO events, {len(json.dumps(doc)):,} bytes of JSON")
    print(f"{'what':<40} {'p50 ms':>9} {'p95 ms':>9}")
    figures = {}
    for name, fn, reps in (
            ("review, 28 days (SQL aggregates)", lambda s: service_review.review(s, end=end), n),
            ("weekly summary, 7 days", lambda s: service_review.weekly(s, end=end), n),
            ("naive: rows loaded, computed in Python", lambda s: naive(s, end, timedelta(days=28)), max(3, n // 3))):
        figures[name] = measure(eng, fn, reps)
        print(f"{name:<40} {figures[name][0]:>9.1f} {figures[name][1]:>9.1f}")
    ours = figures["review, 28 days (SQL aggregates)"][0]
    print(f"naive / review (p50): {figures['naive: rows loaded, computed in Python'][0] / ours:.1f}x")
    eng.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30, help="history spread over this many days (the review reads 28)")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--sqlite", action="store_true", help="the embedded database instead of PostgreSQL")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one review first")
    args = ap.parse_args()
    if args.sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.hosts, args.jobs, args.days, args.runs)
        return
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        run(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", args.hosts, args.jobs, args.days, args.runs,
            args.profile)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
