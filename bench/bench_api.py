"""API latency under 50 concurrent clients, with 1,000 hosts and 100,000 jobs in PostgreSQL.

Starts the real API (`provisioner serve --no-worker`, Redis broker, PROVISIONER_API_WORKERS
processes), seeds the database, then a separate load generator (asyncio + aiohttp: ~0.1 ms of CPU
per request, where httpx's async client took ~1 ms and so ate half of this 2-core machine) runs:

1. service time: one client, one request at a time: latency and the API's CPU per request kind;
2. open loop: 50 clients that each send at random (Poisson) times, at a total rate of R req/s, for
   several R. Latency counts from the moment a request was due, so a slow answer that delays the
   client's next request is charged too (no coordinated omission);
3. closed loop: 50 clients that send the next request as soon as the last answered: the saturation
   throughput; latency there is mostly queueing (50 / throughput).

Mixes: reads only (list jobs, get job, get host), then reads plus 1 in 10 creating a request.
Prints p50/p95/p99 per kind. Not a test.
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
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402

from provisioner.core.sli import percentile  # noqa: E402
from tests.integration.harness import PUBKEY  # noqa: E402
from tests.integration.procs import Api, RedisServer, Service, admin_token, customer, operator  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
READS = ("list jobs", "get job", "get host")
CREATE = "create request"


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


def free_hosts(pg: str, keep: list[int]) -> None:
    """Between phases: bench hosts back to available, so creating a request keeps allocating (a
    request answered 409 'no capacity' would measure something else). `keep`: the hosts the
    customer reads, which must stay theirs."""
    with psycopg.connect(pg) as c:
        c.execute("UPDATE host SET state = 'available', tenant_id = NULL, request_id = NULL "
                  "WHERE name LIKE 'bench%%' AND NOT (id = ANY(%s))", (keep,))


class ApiCpu:
    """CPU seconds used by the API's process tree (uvicorn workers included)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def seconds(self) -> float:
        total = 0.0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total


class Mix:
    def __init__(self, job_ids: list[int], host_ids: list[int], create_every: int) -> None:
        self.job_ids, self.host_ids, self.create_every = job_ids, host_ids, create_every
        self.n = 0

    def of(self, kind: str) -> tuple[str, str, str]:
        if kind == CREATE:
            return CREATE, "POST", "/v1/requests"
        path = {"list jobs": "/v1/jobs?limit=20", "get job": f"/v1/jobs/{random.choice(self.job_ids)}",
                "get host": f"/v1/hosts/{random.choice(self.host_ids)}"}[kind]
        return kind, "GET", path

    def next(self) -> tuple[str, str, str]:
        self.n += 1
        if self.create_every and self.n % self.create_every == 0:
            return self.of(CREATE)
        return self.of(random.choice(READS))


BODY = {"ssh_public_key": PUBKEY}


async def send(c: aiohttp.ClientSession, method: str, path: str, kind: str, errors: dict[str, int]) -> None:
    async with c.request(method, path, json=BODY if method == "POST" else None) as r:
        await r.read()
        if r.status >= 400:
            errors[f"{kind} {r.status}"] = errors.get(f"{kind} {r.status}", 0) + 1


def session(url: str, token: str, clients: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {token}"},
                                 connector=aiohttp.TCPConnector(limit=clients),
                                 timeout=aiohttp.ClientTimeout(total=60))


async def run_load(url: str, token: str, mix: Mix, clients: int, seconds: float,
                   rate: float | None) -> tuple[dict[str, list[float]], dict[str, int], int]:
    """rate=None: closed loop. Otherwise each client sends at Poisson times, rate/clients per second."""
    lat: dict[str, list[float]] = {k: [] for k in (*READS, CREATE)}
    errors: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    async with session(url, token, clients) as c:
        async def client() -> None:
            due = loop.time() + (random.expovariate(rate / clients) if rate else 0)
            while due < stop:
                if rate:
                    await asyncio.sleep(max(0.0, due - loop.time()))
                else:
                    due = loop.time()
                kind, method, path = mix.next()
                try:
                    await send(c, method, path, kind, errors)
                except (TimeoutError, aiohttp.ClientError) as exc:
                    errors[f"{kind} {type(exc).__name__}"] = errors.get(f"{kind} {type(exc).__name__}", 0) + 1
                    continue
                lat[kind].append((loop.time() - due) * 1000)
                if rate:
                    due += random.expovariate(rate / clients)

        await asyncio.gather(*(client() for _ in range(clients)))
    return lat, errors, sum(len(v) for v in lat.values())


def load_now(url: str, token: str, mix: Mix, clients: int, seconds: float,
             rate: float | None) -> tuple[dict[str, list[float]], dict[str, int], int]:
    """run_load to its end, from synchronous code."""
    return asyncio.run(run_load(url, token, mix, clients, seconds, rate))


async def service_time(url: str, token: str, mix: Mix, cpu: ApiCpu, n: int) -> None:
    print(f"\n== service time: 1 client, {n} requests per kind, one at a time")
    async with session(url, token, 1) as c:
        for kind in (*READS, CREATE):
            lat = []
            before = cpu.seconds()
            for _ in range(n):
                _, method, path = mix.of(kind)
                t0 = time.perf_counter()
                await send(c, method, path, kind, {})
                lat.append((time.perf_counter() - t0) * 1000)
            used = (cpu.seconds() - before) / n * 1000
            print(f"{kind:15s} p50 {percentile(lat, 50):6.2f} ms  p99 {percentile(lat, 99):6.2f} ms  "
                  f"API CPU {used:5.2f} ms/request")


def report(label: str, result: tuple[dict[str, list[float]], dict[str, int], int], seconds: float,
           api_cpu_s: float) -> None:
    lat, errors, total = result
    print(f"\n== {label}: {total / seconds:,.0f} req/s answered, API CPU {api_cpu_s / max(total, 1) * 1000:.2f} "
          f"ms/request, API CPU use {api_cpu_s / seconds * 100:.0f}% of one core")
    for kind, v in lat.items():
        if v:
            print(f"{kind:15s} n={len(v):6d}  p50 {percentile(v, 50):7.1f} ms  p95 {percentile(v, 95):7.1f} ms"
                  f"  p99 {percentile(v, 99):7.1f} ms")
    if errors:
        print("errors:", errors)


def phase(label: str, cpu: ApiCpu, seconds: float, go: Callable[[], tuple], pg: str, keep: list[int]) -> None:
    free_hosts(pg, keep)
    before = cpu.seconds()
    result = go()
    report(label, result, seconds, cpu.seconds() - before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20, help="per load phase")
    ap.add_argument("--rates", default="100,200,400", help="open-loop total rates (req/s), comma-separated")
    ap.add_argument("--workers", type=int, default=1, help="API processes (PROVISIONER_API_WORKERS)")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]
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
            print(f"seeded {args.hosts} hosts and {args.jobs} jobs in {time.perf_counter() - t0:.1f}s; "
                  f"API processes: {args.workers}; load: {args.clients} clients, {args.seconds:.0f}s per phase")
            # Customers see their tenant's hosts only: give the customer some by requesting them first.
            host_ids: list[int] = []
            for _ in range(20):
                host_ids += cust.post("/v1/requests", BODY)["host_ids"]
            token = cust.c.headers["Authorization"].split()[1]
            cpu = ApiCpu(svc.p.pid)
            free_hosts(pg, host_ids)
            asyncio.run(service_time(svc.url, token, Mix(job_ids, host_ids, 0), cpu, 200))
            for mix_label, create_every in (("reads", 0), ("reads + 1 in 10 creating a request", 10)):
                for rate in rates:
                    mix = Mix(job_ids, host_ids, create_every)
                    phase(f"{mix_label}, open loop at {rate:.0f} req/s", cpu, args.seconds,
                          partial(load_now, svc.url, token, mix, args.clients, args.seconds, rate), pg, host_ids)
                mix = Mix(job_ids, host_ids, create_every)
                phase(f"{mix_label}, closed loop", cpu, args.seconds,
                      partial(load_now, svc.url, token, mix, args.clients, args.seconds, None), pg, host_ids)
            print("\ngoals: p99 <= 20 ms for reads, <= 100 ms for creating a request")
        finally:
            svc.stop()
            redis.stop()
            with psycopg.connect(ADMIN, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
