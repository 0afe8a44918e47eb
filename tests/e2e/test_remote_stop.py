"""End to end: a cancel, and a phase timeout, while a phase runs over SSH on a lab VM stop the
phase's work on the VM too, not only ansible on the worker.

The real service (`provisioner serve` with its worker, SQLite) enrolls PROVISIONER_E2E_STOP_HOST
(default lab1) by its key file, with the engine-test playbooks whose commission sleeps on the VM:
as root through sudo, and a second copy detached in its own session (labels `sleep_become`,
`sleep_detached`). Once both sleeps run on the VM, the job is cancelled (or its phase timeout hits);
then, over SSH on the VM, no process may be left that carries the job's run tag or is one of the
sleeps. Without the remote stop (workers/remote_stop.py) both sleeps survive: killing ansible on
the worker ends neither. Changes nothing on the VM's disks.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_service_e2e import lab_hosts, ssh
from tests.integration.harness import TEST_PLAYBOOKS
from tests.integration.procs import Api, Service, admin_token, operator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

HOST = __import__("os").environ.get("PROVISIONER_E2E_STOP_HOST", "lab1")
# Long enough for the phase's sleeps to start on a loaded TCG VM (the cancel test sees them within
# ~20 s), short enough not to idle: the test waits for the whole timeout.
PHASE_TIMEOUT_S = 90

# Runs on the VM as root: the processes of job N (its run tag in their environment or command
# line) and the sleeps of this test (by their command line). Prints JSON.
PROBE = r"""
import json, os, sys
tag, sleep = ("PROV_PHASE_RUN=job%s-" % sys.argv[1]).encode(), ["sleep", sys.argv[2]]
me, out = os.getpid(), {"tagged": [], "sleeps": []}
for name in os.listdir("/proc"):
    if not name.isdigit() or int(name) in (me, os.getppid()):
        continue
    try:
        env = open("/proc/%s/environ" % name, "rb").read().split(b"\0")
        cmd = open("/proc/%s/cmdline" % name, "rb").read().split(b"\0")
    except OSError:
        continue
    words = [c.decode(errors="replace") for c in cmd if c]
    if any(e.startswith(tag) for e in env) or any(tag in c for c in cmd):
        out["tagged"].append([int(name), " ".join(words)])
    if words[:2] == sleep:
        out["sleeps"].append([int(name), " ".join(words)])
print(json.dumps(out))
"""


def on_vm(rec: dict[str, Any], job_id: int, marker: str) -> dict[str, list[list[Any]]]:
    code = base64.b64encode(PROBE.encode()).decode()
    out = ssh(rec, f"echo {code} | base64 -d | sudo python3 - {job_id} {marker}").stdout
    return json.loads(out)


def kill_sleeps(rec: dict[str, Any], marker: str) -> None:
    ssh(rec, f"sudo pkill -KILL -f '^sleep {marker}$'", check=False)


@pytest.fixture
def lab_rec() -> dict[str, Any]:
    return next(h for h in lab_hosts() if h["name"] == HOST)


@pytest.fixture
def marker(lab_rec: dict[str, Any]) -> Iterator[str]:
    # No other sleep on the VM lasts that long; no trailing zero (the detached copy's `| float` drops it).
    value = f"{random.randint(1000, 1900)}.{random.randint(10, 99)}{random.randint(1, 9)}"
    yield value
    kill_sleeps(lab_rec, value)  # whatever the outcome, the VM is left clean


def service(tmp: Path, **env: str) -> tuple[Service, Api]:
    books = tmp / "playbooks"
    shutil.copytree(TEST_PLAYBOOKS, books)
    # The engine-test commission only reports facts; make it the sleeping test phase.
    (books / "commission.yml").write_text(
        '- name: "commission"\n  import_playbook: _phase.yml\n  vars:\n    prov_phase: commission\n')
    full = {"PROVISIONER_DATA_DIR": str(tmp / "data"), "PROVISIONER_PLAYBOOK_DIR": str(books),
            "PROVISIONER_RECONCILE_SECONDS": "5", **env}
    svc = Service(full, tmp / "service.log", worker=True)
    return svc, operator(Api(svc.url, admin_token(full)), svc.url)


def enroll_sleeping(op: Api, rec: dict[str, Any], marker: str) -> tuple[dict[str, Any], int]:
    host = op.post("/v1/hosts", {"name": HOST, "address": rec["address"], "port": rec["port"], "ssh_user": rec["user"],
                                 "ssh_key_path": rec["private_key"],
                                 "labels": {"sleep": marker, "sleep_become": "1", "sleep_detached": "1"}})
    job = op.get("/v1/jobs", host_id=host["id"], kind="commission")["items"][0]
    return host, job["id"]


def wait_sleeping(op: Api, rec: dict[str, Any], job_id: int, marker: str, timeout: float,
                  sleeps: int = 2) -> dict[str, Any]:
    """Until `sleeps` of the phase's sleeps (the detached one starts first) run on the VM."""
    deadline = time.monotonic() + timeout
    while True:
        seen = on_vm(rec, job_id, marker)
        if len(seen["sleeps"]) >= sleeps:
            return seen
        job = op.get(f"/v1/jobs/{job_id}")
        assert job["status"] == "running" and time.monotonic() < deadline, (job["status"], job["error"], seen)
        time.sleep(2)


def assert_nothing_left(op: Api, rec: dict[str, Any], job: dict[str, Any], marker: str) -> None:
    left = on_vm(rec, job["id"], marker)
    assert left == {"tagged": [], "sleeps": []}, f"the job's work still runs on {HOST}: {left}"
    events = op.get(f"/v1/jobs/{job['id']}/events", limit=1000)["items"]
    stop = [e for e in events if e["event"] == "remote_stop"]
    assert len(stop) == 1 and stop[0]["stdout"].startswith("stopped "), stop
    print(f"job {job['id']}: {stop[0]['stdout']}")


def test_cancel_stops_the_phase_work_on_the_vm(tmp_path: Path, lab_rec: dict[str, Any], marker: str) -> None:
    svc, op = service(tmp_path)
    try:
        _, job_id = enroll_sleeping(op, lab_rec, marker)
        seen = wait_sleeping(op, lab_rec, job_id, marker, timeout=400)
        print("running on the VM:", seen)
        t0 = time.monotonic()
        op.post(f"/v1/jobs/{job_id}/cancel")
        job = op.wait_job(job_id, timeout=180)
        print(f"cancelled in {time.monotonic() - t0:.1f}s")
        assert job["status"] == "cancelled", job
        assert_nothing_left(op, lab_rec, job, marker)
    finally:
        svc.stop()
        print(svc.tail(20))


def test_phase_timeout_stops_the_phase_work_on_the_vm(tmp_path: Path, lab_rec: dict[str, Any], marker: str) -> None:
    svc, op = service(tmp_path, PROVISIONER_PHASE_TIMEOUTS=json.dumps({"commission": PHASE_TIMEOUT_S}))
    try:
        _, job_id = enroll_sleeping(op, lab_rec, marker)
        # The timeout may hit while the second sleep's module still starts (a loaded TCG VM is slow):
        # what must be stopped is whatever of the phase runs on the VM by then.
        print("running on the VM:", wait_sleeping(op, lab_rec, job_id, marker, timeout=PHASE_TIMEOUT_S, sleeps=1))
        job = op.wait_job(job_id, timeout=PHASE_TIMEOUT_S + 180)
        assert job["status"] == "failed" and job["error_code"] == "phase_timeout", job
        assert_nothing_left(op, lab_rec, job, marker)
    finally:
        svc.stop()
        print(svc.tail(20))
