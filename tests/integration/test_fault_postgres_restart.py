"""Fault: PostgreSQL restarts while a job runs (fast shutdown: connections cut, as in a failover
or an upgrade restart), on a cluster of the test's own (tests/integration/private_pg.py), never
the machine's shared one.

The job must end, not hang: it succeeds, with every event of every phase stored exactly once and in
order (seq 1..event_count with no gap), and the phase that ran through the outage was not failed
by it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.harness import PUBKEY
from tests.integration.private_pg import PrivatePostgres, pg_bin
from tests.integration.procs import Api, RedisServer, Service, Worker
from tests.integration.test_distributed import env_for, redis_srv, setup_world  # noqa: F401  (fixture)

SLEEP_S = 2
OUTAGE_S = 6.0  # longer than the phase's remaining work: its end (events, progress) meets the outage


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    if pg_bin() is None:
        pytest.skip("PostgreSQL server binaries (Debian's postgresql package) not installed")
    pg = PrivatePostgres()
    try:
        yield pg
    finally:
        pg.close()


def all_events(api: Api, job_id: int) -> list[dict]:
    out: list[dict] = []
    while True:
        page = api.get(f"/v1/jobs/{job_id}/events", after_seq=out[-1]["seq"] if out else 0, limit=1000)
        if not page["items"]:
            return out
        out += page["items"]


def test_postgres_restart_mid_job_loses_no_event(tmp_path: Path, private_pg: PrivatePostgres,
                                                 redis_srv: RedisServer) -> None:  # noqa: F811
    # The claim outlasts the outage: a short database restart is not a dead worker.
    env = env_for(tmp_path, private_pg.url, redis_srv.url, PROVISIONER_CLAIM_SECONDS="30")
    svc = Service(env, tmp_path / "api.log")
    worker = Worker(env, tmp_path / "worker.log")
    try:
        # Only raid works long enough to be caught in; the other phases need not wait.
        labels = {"sleep": str(SLEEP_S), "sleep_phase": "raid"}
        admin, cust = setup_world(tmp_path, env, svc, private_pg.url, {"n1": labels})
        job_id = cust.post("/v1/requests", {"ssh_public_key": PUBKEY})["job_ids"][0]
        admin.wait_job(job_id, lambda j: j["status"] == "running" and j["current_phase"] == "raid", timeout=120)
        deadline = time.monotonic() + 60
        while not _sleeping(worker.p.pid):
            assert time.monotonic() < deadline, "the raid phase's command never ran"
            time.sleep(0.05)
        private_pg.stop()
        time.sleep(OUTAGE_S)
        private_pg.start()
        job = admin.wait_job(job_id, timeout=240)
        assert "OperationalError" in worker.tail(10_000), "the outage never reached the worker: nothing was tested"
        assert job["status"] == "succeeded", (job, worker.tail())
        assert job["attempts"] == 1
        events = all_events(admin, job_id)
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, job["event_count"] + 1)), "events lost, doubled or out of order"
        finished = {e["phase"] for e in events if e["event"] == "playbook_on_stats"}
        assert finished == {p["name"] for p in job["phases"]}, "a phase's events are missing"
    finally:
        worker.stop()
        svc.stop()


def _sleeping(pid: int) -> bool:
    """Whether a `sleep` runs under the worker. Its other children come and go (ansible's short-lived
    helpers): one that exits between the listing and the name read is not the sleep."""
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.name() == "sleep":
                return True
        except psutil.NoSuchProcess:
            continue
    return False
