"""The cap on live Vagrant VMs holds under concurrent requests through two API processes on
PostgreSQL (counted under an advisory lock; without it every racer counts the same VMs)."""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.integration.harness import PUBKEY
from tests.integration.procs import Api, RedisServer, Service, admin_token, customer
from tests.integration.test_distributed import env_for

MAX_VMS = 3
REQUESTS = 30


@pytest.fixture
def redis_srv(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis.log")
    yield srv
    srv.stop()


def test_vagrant_cap_holds_under_concurrent_requests(tmp_path: Path, pg_url: str, redis_srv: RedisServer) -> None:
    # No worker process: the VMs' jobs stay queued, so nothing but the requests touches the cap.
    env = env_for(tmp_path, pg_url, redis_srv.url, PROVISIONER_RUN_RECONCILER="0", PROVISIONER_API_WORKERS="2",
                  PROVISIONER_VAGRANT_MAX_VMS=str(MAX_VMS))
    svc = Service(env, tmp_path / "api.log")
    try:
        token = customer(Api(svc.url, admin_token(env)), svc.url).c.headers["Authorization"]

        def one(_: int) -> httpx.Response:
            with httpx.Client(base_url=svc.url, headers={"Authorization": token}, timeout=60) as c:
                return c.post("/v1/requests", json={"pool": "vagrant",
                                                    "ssh_public_key": PUBKEY})

        with cf.ThreadPoolExecutor(REQUESTS) as ex:
            results = list(ex.map(one, range(REQUESTS)))
        codes = [r.status_code for r in results]
        assert codes.count(202) == MAX_VMS, codes
        assert codes.count(409) == REQUESTS - MAX_VMS, codes
        assert all(r.json()["code"] == "capacity.insufficient" for r in results if r.status_code == 409)
        with psycopg.connect(pg_url) as c:
            assert c.execute("SELECT count(*) FROM host WHERE driver='vagrant'").fetchone()[0] == MAX_VMS
            assert c.execute("SELECT count(*) FROM hostrequest").fetchone()[0] == MAX_VMS
    finally:
        svc.stop()
        time.sleep(0.1)
