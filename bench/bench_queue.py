"""Queue overhead: request accepted → first phase started (p50/p99, free worker), and the whole
job's overhead against running the same playbooks with bare `ansible-playbook`.

Runs the real service processes: embedded (SQLite + in-process broker) and distributed
(PostgreSQL + Redis, `provisioner worker`). Phases are the harmless local test playbooks, so the
figures are the engine's own cost. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from provisioner.core.sli import percentile
from provisioner.core.timeutil import parse_iso
from tests.integration.harness import PUBKEY, TEST_PLAYBOOKS
from tests.integration.procs import Api, RedisServer, Service, Worker, admin_token, customer, operator

# A provision of a host reached over SSH (no image phase: images are written on bare metal only).
PHASES = ["wipe", "raid", "firewall", "backup", "restore-verify", "handover"]
ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def bare_ansible(tmp: Path) -> float:
    """The job's playbooks run by plain ansible-playbook, one after the other."""
    inv = tmp / "inv.json"
    inv.write_text(json.dumps({"all": {"hosts": {"target": {"ansible_connection": "local",
                                                            "ansible_python_interpreter": sys.executable}}}}))
    ev = json.dumps({"provisioner_job_id": 0, "provisioner_host_name": "n", "prov_host_labels": {}})
    exe = str(Path(sys.executable).parent / "ansible-playbook")
    t0 = time.perf_counter()
    for ph in PHASES:
        subprocess.run([exe, "-i", str(inv), "-e", ev, str(TEST_PLAYBOOKS / f"{ph}.yml")], check=True,
                       capture_output=True)
    return time.perf_counter() - t0


def run_mode(tmp: Path, env: dict[str, str], n: int, distributed: bool, bare_s: float) -> None:
    svc = Service(env, tmp / "api.log", worker=not distributed)
    worker = Worker(env, tmp / "worker.log", processes=1, threads=2) if distributed else None
    try:
        admin = Api(svc.url, admin_token(env))
        op = operator(admin, svc.url)
        cust = customer(admin, svc.url)
        op.post("/v1/hosts", {"name": "n", "address": "127.0.0.1", "connection": "local"})
        h = op.get("/v1/hosts")["items"][0]
        deadline = time.monotonic() + 60
        while op.get(f"/v1/hosts/{h['id']}")["state"] != "available":
            assert time.monotonic() < deadline, "commission did not finish"
            time.sleep(0.2)
        first_phase, totals, overheads = [], [], []
        for _ in range(n):
            req = cust.post("/v1/requests", {"ssh_public_key": PUBKEY})
            job = admin.wait_job(req["job_ids"][0], timeout=300)
            assert job["status"] == "succeeded", job
            started, accepted = parse_iso(job["phases"][0]["started_at"]), parse_iso(job["accepted_at"])
            assert started and accepted, job  # a succeeded job has both
            first_phase.append((started - accepted).total_seconds() * 1000)
            totals.append(job["sli"]["total_s"])
            overheads.append(job["sli"]["engine_overhead_s"])
            rel = cust.post(f"/v1/requests/{req['id']}/release")
            admin.wait_job(max(rel["job_ids"]), timeout=120)
        mode = "distributed (PostgreSQL + Redis + worker process)" if distributed else "embedded (SQLite + in-process)"
        mean_total = sum(totals) / len(totals)
        print(f"\n== {mode}, {n} jobs, free worker")
        print(f"accepted -> first phase started: p50 {percentile(first_phase, 50):.1f} ms, "
              f"p99 {percentile(first_phase, 99):.1f} ms (goal p99 <= 100 ms)")
        print(f"whole job (accepted -> finished): mean {mean_total:.2f}s; bare ansible-playbook, "
              f"same {len(PHASES)} playbooks: {bare_s:.2f}s; ratio {mean_total / bare_s:.3f} (goal <= 1.05)")
        print(f"engine time outside playbooks per job: mean {sum(overheads) / len(overheads) * 1000:.0f} ms")
    finally:
        if worker:
            worker.stop()
        svc.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--mode", choices=["embedded", "distributed", "both"], default="both")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bare = min(bare_ansible(tmp) for _ in range(3))
        base = {"PROVISIONER_PLAYBOOK_DIR": str(TEST_PLAYBOOKS), "PROVISIONER_ALLOW_LOCAL_CONNECTION": "1"}
        if args.mode in ("embedded", "both"):
            (tmp / "e").mkdir()
            run_mode(tmp / "e", base | {"PROVISIONER_DATA_DIR": str(tmp / "e/data")}, args.jobs, False, bare)
        if args.mode in ("distributed", "both"):
            (tmp / "d").mkdir()
            name = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(ADMIN, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            redis = RedisServer(tmp / "d/redis.log")
            try:
                env = base | {"PROVISIONER_DATA_DIR": str(tmp / "d/data"),
                              "PROVISIONER_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}",
                              "PROVISIONER_BROKER_URL": redis.url}
                run_mode(tmp / "d", env, args.jobs, True, bare)
            finally:
                redis.stop()
                with psycopg.connect(ADMIN, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
