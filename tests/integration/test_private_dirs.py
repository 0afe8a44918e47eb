"""A phase's private data dir holds secrets (extravars with tokens and passwords) while it runs. A
worker killed mid-phase leaves it behind; the next worker start and the reconciler remove it. Job
errors and events never show those paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from provisioner.store.config import Settings
from tests.integration.harness import PUBKEY, World
from tests.integration.procs import RedisServer, Service, Worker
from tests.integration.test_distributed import env_for, redis_srv, setup_world  # noqa: F401  (fixture)
from workers import private_dirs
from workers.reconciler import reconcile_once


def owner_dirs(data_dir: Path) -> set[Path]:
    root = data_dir / private_dirs.RUNS
    return {p for p in root.iterdir() if p.is_dir()} if root.exists() else set()


def test_private_dir_of_a_killed_worker_is_removed_by_the_next_start(tmp_path: Path, pg_url: str,
                                                                      redis_srv: RedisServer) -> None:  # noqa: F811
    env = env_for(tmp_path, pg_url, redis_srv.url, PROVISIONER_RUN_RECONCILER="0")
    worker_env = env | {"PROVISIONER_DATA_DIR": str(tmp_path / "worker-data")}
    svc = Service(env, tmp_path / "api.log")
    worker = Worker(worker_env, tmp_path / "worker1.log")
    try:
        admin, cust = setup_world(tmp_path, env, svc, pg_url, {"n1": {"sleep": "4", "sleep_phase": "raid"}})
        job_id = cust.post("/v1/requests", {"ssh_public_key": PUBKEY})["job_ids"][0]
        admin.wait_job(job_id, lambda j: j["status"] == "running" and j["current_phase"] == "raid", timeout=90)
        (dead,) = owner_dirs(tmp_path / "worker-data")
        deadline = time.monotonic() + 10
        while not list(dead.glob("prov-job-*/env/extravars")):  # the phase's secrets, on disk
            assert time.monotonic() < deadline, sorted(dead.rglob("*"))
            time.sleep(0.1)
        worker.kill9()
        assert list(dead.glob("prov-job-*/env/extravars")), "the killed worker's private dir should remain"
        worker = Worker(worker_env, tmp_path / "worker2.log")
        deadline = time.monotonic() + 30
        while dead.exists():
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.2)
        assert len(owner_dirs(tmp_path / "worker-data")) == 1  # the new worker's own, kept
    finally:
        worker.stop()
        svc.stop()


HOLD = ("import sys, time\nfrom provisioner.store.config import Settings\nfrom workers import private_dirs\n"
        "d = private_dirs.owner_dir(Settings())\n(d / 'prov-job-x').mkdir()\n"
        "(d / 'prov-job-x' / 'secret').write_text('s')\n"
        "print(d, flush=True)\ntime.sleep(float(sys.argv[1]))")


def test_reconciler_removes_dirs_of_dead_owners_only(tmp_path: Path, pg_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url=pg_url, run_reconciler=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")} | {
        "PROVISIONER_DATA_DIR": str(tmp_path)}
    dead = Path(subprocess.run([sys.executable, "-c", HOLD, "0"], env=env, capture_output=True, text=True,
                               check=True).stdout.strip())
    live_proc = subprocess.Popen([sys.executable, "-c", HOLD, "60"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert live_proc.stdout is not None
        live = Path(live_proc.stdout.readline().strip())
        assert (dead / "prov-job-x" / "secret").exists() and (live / "prov-job-x" / "secret").exists()
        counts = reconcile_once(settings)
        assert counts.get("stale_private_dirs") == 1
        assert not dead.exists() and (live / "prov-job-x" / "secret").exists()
        mine = private_dirs.owner_dir(settings)  # this process's own dir is alive too
        assert reconcile_once(settings).get("stale_private_dirs") is None and mine.exists()
    finally:
        live_proc.kill()
        live_proc.wait()
    assert reconcile_once(settings).get("stale_private_dirs") == 1 and not live.exists()


def test_job_errors_and_events_do_not_show_private_paths(sqlite_world: World, tmp_path: Path) -> None:
    w = sqlite_world
    w.enroll("node1", labels={"fail_phase": "firewall", "fail_shows_paths": "1"})
    job = w.wait_job(w.request().json()["job_ids"][0])
    assert job["status"] == "failed" and "asked to fail in firewall" in job["error"], job
    assert f"(inventory in {private_dirs.SCRUBBED})" in job["error"], job["error"]
    assert str(tmp_path) not in job["error"] and "prov-job-" not in job["error"]
    # Nor do its events, as stored: the events API (and the SSE stream and the dashboard, which read
    # the same rows) show the failed task's message with the path replaced.
    events = w.get("cust_a", f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()["items"]
    failed = [e for e in events if e["status"] == "failed"]
    assert failed and f"(inventory in {private_dirs.SCRUBBED})" in failed[-1]["stdout"], failed
    text = json.dumps(events)
    assert str(tmp_path) not in text and "prov-job-" not in text and private_dirs.RUNS not in text
