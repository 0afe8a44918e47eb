"""Event ingestion: events/s persisted on PostgreSQL through the worker's EventSink (batched inserts).

Prints figures; not a test. Usage: .venv/bin/python bench/bench_events.py [--events 50000]
"""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg
from sqlmodel import Session

from provisioner.store.db import make_engine
from provisioner.store.models import Host, Job, SQLModel
from workers.event_sink import EventSink, event_row

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def fake_event(i: int) -> dict:
    return {"event": "runner_on_ok", "stdout": f"ok: [target] => task {i} " + "x" * 120,
            "event_data": {"host": "target", "task": f"task number {i}", "duration": 0.01,
                           "res": {"changed": i % 3 == 0}}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        eng = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        SQLModel.metadata.create_all(eng)
        with Session(eng) as s:
            h = Host(name="h", address="x")
            s.add(h)
            s.flush()
            j = Job(kind="provision", host_id=h.id or 0)
            s.add(j)
            s.commit()
            job_id = j.id or 0
        sink = EventSink(eng, job_id, 0, batch=args.batch)
        t0 = time.perf_counter()
        for i in range(args.events):
            sink.add(event_row(fake_event(i), job_id=job_id, seq=0, phase="raid", stdout_max=4000))
        produced = time.perf_counter() - t0
        sink.close()
        total = time.perf_counter() - t0
        with eng.connect() as conn:
            from sqlalchemy import text

            n = conn.execute(text("select count(*), min(seq), max(seq) from jobevent")).one()
        assert n[0] == args.events and n[1] == 1 and n[2] == args.events, n
        print(f"events: {args.events}  batch: {args.batch}")
        print(f"produced in {produced:.2f}s; all stored after {total:.2f}s")
        print(f"ingestion rate (PostgreSQL): {args.events / total:,.0f} events/s (goal >= 5,000/s)")
        eng.dispose()
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
