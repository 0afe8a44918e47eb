"""The distributed shape for real: PostgreSQL + Redis, `provisioner serve --no-worker` and
`provisioner worker` processes. Worker crash (kill -9), Redis restart, concurrent allocation."""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.integration.harness import PUBKEY, TEST_PLAYBOOKS
from tests.integration.procs import Api, RedisServer, Service, Worker, admin_token, customer, operator


@pytest.fixture
def redis_srv(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server, so restarting it cannot disturb anything else on the machine."""
    srv = RedisServer(tmp_path / "redis.log")
    yield srv
    srv.stop()


def env_for(tmp: Path, pg_url: str, broker: str, **extra: str) -> dict[str, str]:
    return {
        "PROVISIONER_DATA_DIR": str(tmp / "data"),
        "PROVISIONER_DATABASE_URL": pg_url,
        "PROVISIONER_BROKER_URL": broker,
        "PROVISIONER_PLAYBOOK_DIR": str(TEST_PLAYBOOKS),
        "PROVISIONER_ALLOW_LOCAL_CONNECTION": "1",
        "PROVISIONER_RECONCILE_SECONDS": "1",
        "PROVISIONER_REQUEUE_AFTER_SECONDS": "4",
        "PROVISIONER_CLAIM_SECONDS": "5",
        "PROVISIONER_HEARTBEAT_SECONDS": "1",
    } | extra


def make_available(pg_url: str, names: list[str]) -> None:
    """Test setup: mark enrolled hosts as commissioned (the commission path has its own tests)."""
    with psycopg.connect(pg_url) as c:
        # Two data disks, as the stand-in commission reports: the handover gate checks redundancy.
        c.execute("""UPDATE host SET state='available', hardware='{"cpus": 2, "memory_mb": 2048,
                     "disks": [{"name": "/dev/vdb"}, {"name": "/dev/vdc"}], "data_disks": ["/dev/vdb", "/dev/vdc"]}'
                     WHERE name = ANY(%s)""", (names,))


def setup_world(tmp: Path, env: dict[str, str], svc: Service, pg_url: str, hosts: dict[str, dict]) -> tuple[Api, Api]:
    admin = Api(svc.url, admin_token(env))
    op = operator(admin, svc.url)
    for name, labels in hosts.items():
        op.post("/v1/hosts", {"name": name, "address": "127.0.0.1", "connection": "local", "labels": labels,
                              "commission": False})
    make_available(pg_url, list(hosts))
    return admin, customer(admin, svc.url)


def test_distributed_job_runs_in_worker_process(tmp_path: Path, pg_url: str, redis_srv: RedisServer) -> None:
    env = env_for(tmp_path, pg_url, redis_srv.url)
    svc = Service(env, tmp_path / "api.log")
    worker = Worker(env, tmp_path / "worker.log")
    try:
        admin, cust = setup_world(tmp_path, env, svc, pg_url, {"n1": {}})
        req = cust.post("/v1/requests", {"ssh_public_key": PUBKEY})
        job = admin.wait_job(req["job_ids"][0])
        assert job["status"] == "succeeded", (job.get("error_code"), job.get("error"), worker.tail())
        assert job["attempts"] == 1 and job["sli"]["slo_met"] is True
    finally:
        worker.stop()
        svc.stop()


def test_worker_killed_mid_job_is_retried_by_the_reconciler(tmp_path: Path, pg_url: str,
                                                            redis_srv: RedisServer) -> None:
    env = env_for(tmp_path, pg_url, redis_srv.url)
    svc = Service(env, tmp_path / "api.log")
    worker = Worker(env, tmp_path / "worker1.log")
    try:
        # Only raid works long enough to be caught in; the other phases need not wait.
        admin, cust = setup_world(tmp_path, env, svc, pg_url, {"n1": {"sleep": "3", "sleep_phase": "raid"}})
        job_id = cust.post("/v1/requests", {"ssh_public_key": PUBKEY})["job_ids"][0]
        admin.wait_job(job_id, lambda j: j["status"] == "running" and j["current_phase"] == "raid", timeout=90)
        worker.kill9()  # no goodbye: the lease simply stops being renewed
        j = admin.wait_job(job_id, lambda j: j["status"] == "queued" and j["attempts"] == 1, timeout=30)
        assert "stopped renewing its lease" in j["error"]
        worker = Worker(env, tmp_path / "worker2.log")
        job = admin.wait_job(job_id, timeout=120)
        assert job["status"] == "succeeded", (job.get("error_code"), job.get("error"), worker.tail())
        assert job["attempts"] == 2
        phases = {p["name"]: p for p in job["phases"]}
        assert phases["wipe"]["attempts"] == 1  # finished before the crash: not run again
        assert phases["raid"]["attempts"] == 2  # interrupted: run again (idempotent)
        audit = admin.get("/v1/audit", action="job.retry")["items"]
        assert audit and audit[0]["object_id"] == str(job_id)
    finally:
        worker.stop()
        svc.stop()


def test_worker_killed_without_attempts_left_fails_with_reason(tmp_path: Path, pg_url: str,
                                                               redis_srv: RedisServer) -> None:
    env = env_for(tmp_path, pg_url, redis_srv.url, PROVISIONER_MAX_ATTEMPTS="1")
    svc = Service(env, tmp_path / "api.log")
    worker = Worker(env, tmp_path / "worker.log")
    try:
        admin, cust = setup_world(tmp_path, env, svc, pg_url, {"n1": {"sleep": "3"}})
        req = cust.post("/v1/requests", {"ssh_public_key": PUBKEY})
        job_id = req["job_ids"][0]
        admin.wait_job(job_id, lambda j: j["status"] == "running" and j["current_phase"] == "wipe", timeout=90)
        worker.kill9()
        job = admin.wait_job(job_id, timeout=30)
        assert job["status"] == "failed" and "stopped renewing its lease" in job["error"]
        assert "during phase wipe" in job["error"] and job["finished_at"]
        host = admin.get(f"/v1/hosts/{req['host_ids'][0]}")
        assert host["state"] == "failed"
        assert cust.get(f"/v1/requests/{req['id']}")["status"] == "failed"
    finally:
        worker.stop()
        svc.stop()


def test_redis_restart_loses_no_job(tmp_path: Path, pg_url: str, redis_srv: RedisServer) -> None:
    env = env_for(tmp_path, pg_url, redis_srv.url)
    svc = Service(env, tmp_path / "api.log")
    worker = None
    try:
        admin, cust = setup_world(tmp_path, env, svc, pg_url, {"n1": {}, "n2": {}})
        # 1: a message sits in Redis, then Redis restarts empty (it keeps nothing on disk).
        first = cust.post("/v1/requests", {"ssh_public_key": PUBKEY})
        port = redis_srv.port
        redis_srv.stop()
        # 2: a request while Redis is down is still accepted: the job is safe in the database.
        second = cust.post("/v1/requests", {"ssh_public_key": PUBKEY})
        assert admin.get(f"/v1/jobs/{second['job_ids'][0]}")["status"] == "queued"
        restarted = RedisServer(tmp_path / "redis2.log", port=port)
        try:
            worker = Worker(env, tmp_path / "worker.log")
            for req in (first, second):
                job = admin.wait_job(req["job_ids"][0], timeout=120)
                assert job["status"] == "succeeded", (job, worker.tail(), svc.tail())
        finally:
            restarted.stop()
    finally:
        if worker:
            worker.stop()
        svc.stop()


@pytest.mark.parametrize("api_processes", [1, 2])
def test_100_concurrent_requests_for_10_hosts(tmp_path: Path, pg_url: str, redis_srv: RedisServer,
                                              api_processes: int) -> None:
    env = env_for(tmp_path, pg_url, redis_srv.url, PROVISIONER_RUN_RECONCILER="0",
                  PROVISIONER_API_WORKERS=str(api_processes))
    svc = Service(env, tmp_path / "api.log")
    try:
        admin, cust = setup_world(tmp_path, env, svc, pg_url, {f"n{i}": {} for i in range(10)})
        token = cust.c.headers["Authorization"]

        def one(_: int) -> httpx.Response:
            with httpx.Client(base_url=svc.url, headers={"Authorization": token}, timeout=60) as c:
                return c.post("/v1/requests", json={"ssh_public_key": PUBKEY})

        with cf.ThreadPoolExecutor(100) as ex:
            results = list(ex.map(one, range(100)))
        codes = [r.status_code for r in results]
        assert codes.count(202) == 10, codes
        assert codes.count(409) == 90, codes
        assert all(r.json()["code"] == "capacity.insufficient" for r in results if r.status_code == 409)
        hosts = [r.json()["host_ids"][0] for r in results if r.status_code == 202]
        assert len(set(hosts)) == 10
        with psycopg.connect(pg_url) as c:
            rows = c.execute("SELECT host_id, count(*) FROM job WHERE kind='provision' GROUP BY host_id").fetchall()
            assert len(rows) == 10 and all(n == 1 for _, n in rows)
            assert c.execute("SELECT count(*) FROM hostrequest").fetchone()[0] == 10
            assert c.execute("SELECT count(*) FROM host WHERE state='provisioning'").fetchone()[0] == 10
    finally:
        svc.stop()
        time.sleep(0.1)


def test_revocation_reaches_every_api_process(tmp_path: Path, pg_url: str, redis_srv: RedisServer) -> None:
    """Token lookups are cached per API process: the process that revokes forgets at once, the others
    within PROVISIONER_AUTH_CACHE_SECONDS."""
    env = env_for(tmp_path, pg_url, redis_srv.url, PROVISIONER_RUN_RECONCILER="0",
                  PROVISIONER_AUTH_CACHE_SECONDS="2")
    a = Service(env, tmp_path / "a.log")
    b = Service(env, tmp_path / "b.log")
    try:
        admin = Api(a.url, admin_token(env))
        user = admin.post("/v1/users", {"name": "temp", "role": "auditor"})
        tok = admin.post(f"/v1/users/{user['id']}/tokens", {"name": "t"})
        hdr = {"Authorization": f"Bearer {tok['token']}"}
        for svc in (a, b):  # both processes now hold the lookup
            assert httpx.get(svc.url + "/v1/me", headers=hdr).status_code == 200
        assert admin.c.delete(f"/v1/tokens/{tok['token_id']}").status_code == 204
        r = httpx.get(a.url + "/v1/me", headers=hdr)
        assert r.status_code == 401 and r.json()["code"] == "auth.token_expired"
        revoked = time.monotonic()
        while httpx.get(b.url + "/v1/me", headers=hdr).status_code == 200:
            assert time.monotonic() - revoked < 4, "the other API process still accepts a revoked token"
            time.sleep(0.1)
        r = httpx.get(b.url + "/v1/me", headers=hdr)
        assert r.status_code == 401 and r.json()["code"] == "auth.token_expired"
        # A wrong secret for a cached token id is refused: the cache holds rows, not verdicts.
        good = admin.c.headers["Authorization"]
        token_id = good.split("_")[1]
        r = httpx.get(a.url + "/v1/me", headers={"Authorization": f"Bearer prov_{token_id}_wrongsecret"})
        assert r.status_code == 401 and r.json()["code"] == "auth.invalid_token"
    finally:
        a.stop()
        b.stop()


def test_database_outage_answers_503_then_recovers(tmp_path: Path, pg_url: str, redis_srv: RedisServer) -> None:
    env = env_for(tmp_path, pg_url, redis_srv.url, PROVISIONER_RUN_RECONCILER="0")
    svc = Service(env, tmp_path / "api.log")
    db = pg_url.rsplit("/", 1)[1]
    try:
        admin = Api(svc.url, admin_token(env))
        assert admin.c.get("/v1/jobs").status_code == 200
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
            c.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            try:
                r = admin.c.get("/v1/jobs")
                assert r.status_code == 503, r.text
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["code"] == "database.unavailable" and r.headers["retry-after"] == "5"
                r = admin.c.post("/v1/tenants", json={"name": "during-outage"})
                assert r.status_code == 503 and r.json()["code"] == "database.unavailable"
            finally:
                c.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        assert admin.c.get("/v1/jobs").status_code == 200
        names = [t["name"] for t in admin.get("/v1/tenants")["items"]]
        assert "during-outage" not in names
    finally:
        svc.stop()
