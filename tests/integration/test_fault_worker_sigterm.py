"""Fault: a worker process is stopped with SIGTERM while a phase runs (a deploy, systemd stop,
Kubernetes). It must hand the job back at once (queued, the interrupted phase marked, the attempt
not counted) and leave nothing of the phase running; another worker then resumes the job after the
phases it finished (the test stops once that worker has finished the interrupted phase: the rest
of a job is the distributed tests' business). Never `running` until a claim expires, never a job
failed by a restart.

Two ways the signal arrives: to the worker's main process only (docker/Kubernetes stop PID 1), and to
its whole process group, ansible included (systemd's default KillMode=control-group).

The claim is long here (60 s) on purpose: a hand-back that relied on the reconciler noticing an
expired claim would not make the deadlines below.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.harness import PUBKEY
from tests.integration.procs import RedisServer, Service, Worker
from tests.integration.test_distributed import env_for, redis_srv, setup_world  # noqa: F401  (fixture)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("target", ["main-process", "process-group"])
def test_sigterm_mid_phase_hands_the_job_back(tmp_path: Path, pg_url: str, redis_srv: RedisServer,  # noqa: F811
                                               target: str) -> None:
    env = env_for(tmp_path, pg_url, redis_srv.url, PROVISIONER_CLAIM_SECONDS="60")
    svc = Service(env, tmp_path / "api.log")
    worker = Worker(env, tmp_path / "worker1.log")
    second = None
    try:
        admin, cust = setup_world(tmp_path, env, svc, pg_url, {"n1": {"sleep": "6", "sleep_phase": "raid"}})
        job_id = cust.post("/v1/requests", {"ssh_public_key": PUBKEY})["job_ids"][0]
        admin.wait_job(job_id, lambda j: j["status"] == "running" and j["current_phase"] == "raid", timeout=300)
        deadline = time.monotonic() + 60
        while not (sleepers := [p for p in descendants(worker.p.pid) if p.name() == "sleep"]):
            assert time.monotonic() < deadline, "the phase's command never ran under the worker"
            time.sleep(0.1)
        t0 = time.monotonic()
        if target == "main-process":
            os.kill(worker.p.pid, signal.SIGTERM)
        else:
            os.killpg(worker.p.pid, signal.SIGTERM)
        j = admin.wait_job(job_id, lambda j: j["status"] == "queued", timeout=60)
        handback_s = time.monotonic() - t0
        assert j["error"].startswith("handed back: ") and "during phase raid" in j["error"], j
        assert j["attempts"] == 0, "a hand-back must not use up one of the job's attempts"
        phases = {p["name"]: p for p in j["phases"]}
        assert phases["wipe"]["status"] == "succeeded" and phases["raid"]["status"] == "interrupted", phases
        assert worker.p.wait(timeout=30) == 0, worker.tail()
        assert not [p for p in sleepers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], \
            "the interrupted phase's command outlived the worker"
        assert admin.get("/v1/audit", action="job.handback")["items"][0]["object_id"] == str(job_id)

        # Another worker resumes it: the interrupted phase runs again, the finished one does not.
        second = Worker(env, tmp_path / "worker2.log")
        job = admin.wait_job(job_id, lambda j: any(p["name"] == "raid" and p["status"] == "succeeded"
                                                   for p in j["phases"]), timeout=300)
        assert job["status"] in ("running", "succeeded") and job["attempts"] == 1, (job, second.tail())
        phases = {p["name"]: p for p in job["phases"]}
        assert phases["wipe"]["attempts"] == 1, "a finished phase ran again"
        assert phases["raid"]["attempts"] == 2
        print(f"\nSIGTERM ({target}) -> job queued again in {handback_s:.1f} s")
    finally:
        for w in (worker, second):
            if w:
                w.stop()
        svc.stop()
