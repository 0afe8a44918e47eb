"""API latency under 50 concurrent clients, with 1,000 hosts and 100,000 jobs in PostgreSQL.

Starts the real API (`provisioner serve --no-worker`, Redis broker), seeds the database, then a
separate load-generator process (asyncio + httpx) keeps 50 clients busy: reads (job list, job,
host) and request creation. Prints p50/p95/p99 per kind. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from provisioner.sli import percentile  # noqa: E402
from tests.integration.harness import PUBKEY  # noqa: E402
from tests.integration.procs import Api, RedisServer, Service, admin_token, customer, operator  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def seed(pg: str, tenant_id: int, hosts: int, jobs: int) -> list[int]:
    with psycopg.connect(pg) as c:
        with c.cursor().copy("COPY host (name, address, port, ssh_user, connection, credential_path, labels, pool,"
                             " driver, state, hardware, results, compliance, created_at, updated_at) FROM STDIN") as cp:
            hw = json.dumps({"cpus": 4, "memory_mb": 8192, "disks": [{"name": "/dev/sdb"}, {"name": "/dev/sdc"}]})
            for i in range(hosts):
                cp.write_row((f"bench{i:05d}", f"10.0.{i // 250}.{i % 250}", 22, "root", "ssh", "/k", "{}",
                              "default", "static", "available", hw, "{}", "{}", "now()", "now()"))
        ids = [r[0] for r in c.execute("SELECT id FROM host ORDER BY id").fetchall()]
        phases = json.dumps([{"name": p, "status": "succeeded", "duration_s": 10.0} for p in ("wipe", "raid")])
        sli = json.dumps({"total_s": 100.0, "slo_met": True})
        with c.cursor().copy("COPY job (kind, host_id, tenant_id, status, attempts, max_attempts, accepted_at,"
                             " queued_at, started_at, finished_at, cancel_requested, phases, params, event_count,"
                             " sli, slo_target_s, slo_met) FROM STDIN") as cp:
            for i in range(jobs):
                cp.write_row(("provision", ids[i % len(ids)], tenant_id if i % 2 == 0 else None, "succeeded", 1, 2,
                              "now()", "now()", "now()", "now()", False, phases, "{}", 40, sli, 1800.0, True))
        c.execute("ANALYZE")
        return [r[0] for r in c.execute("SELECT id FROM job WHERE tenant_id = %s LIMIT 5000", (tenant_id,))]


async def load(url: str, token: str, clients: int, seconds: float, job_ids: list[int], host_ids: list[int],
               create_every: int) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = {"list jobs": [], "get job": [], "get host": [], "create request": []}
    errors: dict[str, int] = {}
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=30) as c:
        async def one(n: int) -> None:
            i = 0
            while time.monotonic() < stop:
                i += 1
                if create_every and (i + n) % create_every == 0:
                    kind, req = "create request", c.post("/v1/requests", json={"image": "debian-12",
                                                                                "ssh_public_key": PUBKEY})
                else:
                    kind = random.choice(["list jobs", "get job", "get host"])
                    path = {"list jobs": "/v1/jobs?limit=20", "get job": f"/v1/jobs/{random.choice(job_ids)}",
                            "get host": f"/v1/hosts/{random.choice(host_ids)}"}[kind]
                    req = c.get(path)
                t0 = time.perf_counter()
                r = await req
                lat[kind].append((time.perf_counter() - t0) * 1000)
                if r.status_code >= 400 and not (kind == "create request" and r.status_code == 409):
                    errors[f"{kind} {r.status_code}"] = errors.get(f"{kind} {r.status_code}", 0) + 1

        await asyncio.gather(*(one(n) for n in range(clients)))
    if errors:
        print("errors:", errors)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--workers", type=int, default=2, help="API processes")
    args = ap.parse_args()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    pg = f"postgresql://postgres@127.0.0.1:5432/{name}"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        redis = RedisServer(tmp / "redis.log")
        env = {"PROVISIONER_DATA_DIR": str(tmp / "data"), "PROVISIONER_DATABASE_URL": pg,
               "PROVISIONER_BROKER_URL": redis.url, "PROVISIONER_RUN_RECONCILER": "0",
               "PROVISIONER_API_WORKERS": str(args.workers)}
        svc = Service(env, tmp / "api.log")
        try:
            admin = Api(svc.url, admin_token(env))
            operator(admin, svc.url)
            cust = customer(admin, svc.url)
            tenant_id = admin.get("/v1/tenants")["items"][0]["id"]
            t0 = time.perf_counter()
            job_ids = seed(pg, tenant_id, args.hosts, args.jobs)
            print(f"seeded {args.hosts} hosts and {args.jobs} jobs in {time.perf_counter() - t0:.1f}s")
            # Customers see hosts of their tenant only: read hosts as the operator would be unfair; give
            # the customer some hosts by requesting them first.
            host_ids = []
            for _ in range(20):
                host_ids += cust.post("/v1/requests", {"image": "debian-12", "ssh_public_key": PUBKEY})["host_ids"]
            token = cust.c.headers["Authorization"].split()[1]
            for label, create_every in (("reads only", 0), ("reads + request creation (1 in 10)", 10)):
                lat = asyncio.run(load(svc.url, token, args.clients, args.seconds, job_ids, host_ids, create_every))
                total = sum(len(v) for v in lat.values())
                print(f"\n== {label}: {args.clients} clients, {args.seconds:.0f}s, {total / args.seconds:,.0f} req/s, "
                      f"API processes: {args.workers}")
                for kind, v in lat.items():
                    if v:
                        print(f"{kind:15s} n={len(v):6d}  p50 {percentile(v, 50):7.1f} ms  "
                              f"p95 {percentile(v, 95):7.1f} ms"
                              f"  p99 {percentile(v, 99):7.1f} ms")
            print("goals: p99 <= 20 ms for reads, <= 100 ms for creating a request")
        finally:
            svc.stop()
            redis.stop()
            with psycopg.connect(ADMIN, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
