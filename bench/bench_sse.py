"""SSE delivery delay: from an event's commit to the client reading it on GET /v1/jobs/{id}/stream,
against the 1 s polling of /v1/jobs/{id}/events that `jobs watch` did before.

A real `provisioner serve` on a fresh PostgreSQL database; a producer commits one event at a time
(random gaps of 10-100 ms, like ansible's task events) and notes the commit time; the clients note
when each event arrives. Prints p50/p95/p99/max of both. Not a test.

Usage: .venv/bin/python bench/bench_sse.py [--events 300] [--streams 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from httpx_sse import connect_sse
from sqlalchemy import insert, update
from sqlmodel import Session, col

from provisioner.store.db import make_engine
from provisioner.store.migrate import upgrade
from provisioner.store.models import Host, Job, JobEvent

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BIN = Path(sys.executable).parent


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


def summary(name: str, delays_ms: list[float]) -> str:
    return (f"{name:<28} n={len(delays_ms):>5}  p50 {pct(delays_ms, 50):7.1f} ms  p95 {pct(delays_ms, 95):7.1f} ms  "
            f"p99 {pct(delays_ms, 99):7.1f} ms  max {max(delays_ms):7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--streams", type=int, default=1, help="SSE clients following the same job")
    ap.add_argument("--sse-poll", type=float, default=0.05, help="PROVISIONER_SSE_POLL_SECONDS")
    args = ap.parse_args()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    tmp = tempfile.mkdtemp(prefix="bench-sse-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")} | {
        "PROVISIONER_DATABASE_URL": url, "PROVISIONER_DATA_DIR": tmp, "PROVISIONER_RUN_RECONCILER": "0",
        "PROVISIONER_SSE_POLL_SECONDS": str(args.sse_poll)}
    engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    upgrade(engine)
    token = json.loads(subprocess.run([str(BIN / "provisioner"), "-o", "json", "admin", "init"], env=env,
                                      capture_output=True, text=True, check=True).stdout)["token"]
    port = 18000 + random.randint(0, 999)
    svc = subprocess.Popen([str(BIN / "provisioner"), "serve", "--no-worker", "--port", str(port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        for _ in range(150):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        with Session(engine) as s:
            h = Host(name="h", address="192.0.2.1")
            s.add(h)
            s.flush()
            job = Job(kind="provision", host_id=h.id or 0, status="running")
            s.add(job)
            s.commit()
            job_id = job.id or 0

        committed: dict[int, float] = {}
        sse_delays: list[float] = []
        poll_delays: list[float] = []
        lock = threading.Lock()
        ready = threading.Barrier(args.streams + 2)

        def follow_sse() -> None:
            with httpx.Client(timeout=httpx.Timeout(30, read=None)) as http, \
                    connect_sse(http, "GET", f"{base}/v1/jobs/{job_id}/stream", headers=headers) as src:
                ready.wait()
                for sse in src.iter_sse():
                    now = time.time()
                    if sse.event == "event":
                        with lock:
                            sse_delays.append((now - committed[int(sse.id)]) * 1000)
                    if sse.event == "end":
                        return

        def follow_polling() -> None:
            after = 0
            with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
                ready.wait()
                while True:
                    page = http.get(f"/v1/jobs/{job_id}/events", params={"after_seq": after, "limit": 1000}).json()
                    now = time.time()
                    for e in page["items"]:
                        after = e["seq"]
                        with lock:
                            poll_delays.append((now - committed[after]) * 1000)
                    if after >= args.events:
                        return
                    time.sleep(1.0)

        threads = [threading.Thread(target=follow_sse) for _ in range(args.streams)]
        threads.append(threading.Thread(target=follow_polling))
        for t in threads:
            t.start()
        ready.wait()
        rng = random.Random(1)
        t0 = time.time()
        with engine.connect() as conn:
            for seq in range(1, args.events + 1):
                # One event per transaction, written like workers/event_sink.py writes a batch.
                with conn.begin():
                    conn.execute(insert(JobEvent), [{"job_id": job_id, "seq": seq, "phase": "raid",
                                                     "event": "runner_on_ok", "task": f"task {seq}", "status": "ok"}])
                    conn.execute(update(Job).where(col(Job.id) == job_id).values(event_count=seq))
                    # Noted as the commit starts: a client may read the row before this thread runs
                    # again, and the commit's own time is counted in the delay (an upper bound).
                    committed[seq] = time.time()
                time.sleep(rng.uniform(0.01, 0.1))
            with conn.begin():
                conn.execute(update(Job).where(col(Job.id) == job_id).values(status="succeeded"))
        produced = time.time() - t0
        for t in threads:
            t.join(timeout=60)
        print(f"events: {args.events} over {produced:.1f}s, {args.streams} SSE stream(s), "
              f"PROVISIONER_SSE_POLL_SECONDS={args.sse_poll}, PostgreSQL, one API process")
        print(summary("SSE (event stored->client)", sse_delays))
        print(summary("1 s polling (before)", poll_delays))
        print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
              + f" on {os.cpu_count()} CPUs")
        print(f"goal: SSE p99 <= 200 ms: {'met' if pct(sse_delays, 99) <= 200 else 'MISSED'}")
    finally:
        svc.terminate()
        svc.wait(timeout=15)
        engine.dispose()
        with psycopg.connect(ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
