"""Request → allocation → provision job → ansible-runner → events → SLIs, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

from tests.integration.harness import World, sleep_marker, sleepers
from tests.integration.sshd import Sshd


def test_enroll_commission_gathers_facts(world: World) -> None:
    host = world.enroll("node1", labels={"cpus": "8"})
    assert host["state"] == "available"
    assert host["hardware"]["cpus"] == 8
    assert host["hardware"]["data_disks"] == ["/dev/vdb", "/dev/vdc"]
    assert host["credential"] == "none"


def test_request_runs_all_phases_with_events_and_slis(world: World) -> None:
    host = world.enroll("node1")
    r = world.request()
    assert r.status_code == 202, r.text
    req = r.json()
    assert req["host_ids"] == [host["id"]] and len(req["job_ids"]) == 1
    job = world.wait_job(req["job_ids"][0], who="cust_a")
    assert job["status"] == "succeeded", job
    names = [p["name"] for p in job["phases"]]
    assert names == ["wipe", "raid", "firewall", "backup", "restore-verify", "handover"]
    assert all(p["status"] == "succeeded" and p["duration_s"] > 0 for p in job["phases"])
    sli = job["sli"]
    assert set(sli["phases_s"]) == set(names)
    assert sli["queue_wait_s"] >= 0 and sli["total_s"] >= sum(sli["phases_s"].values())
    assert sli["slo_target_s"] == 1800 and sli["slo_met"] is True and job["slo_met"] is True
    # Every event stored, in order, with a gap-free per-job counter.
    events = world.get("cust_a", f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()
    seqs = [e["seq"] for e in events["items"]]
    assert seqs == list(range(1, job["event_count"] + 1))
    tasks = [e for e in events["items"] if e["event"] == "runner_on_ok"]
    assert {e["phase"] for e in tasks} == set(names)
    assert all(e["host"] == "target" and e["duration_s"] is not None for e in tasks)
    h = world.get("cust_a", f"/v1/hosts/{host['id']}").json()
    assert h["state"] == "active" and h["tenant_id"] == world.ids["acme"]
    assert world.get("cust_a", f"/v1/requests/{req['id']}").json()["status"] == "ready"

    rel = world.post("cust_a", f"/v1/requests/{req['id']}/release").json()
    assert rel["status"] == "releasing"
    rel_job = max(rel["job_ids"])
    assert world.wait_job(rel_job)["status"] == "succeeded"
    h = world.get("operator", f"/v1/hosts/{host['id']}").json()
    assert h["state"] == "available" and h["tenant_id"] is None
    assert world.get("cust_a", f"/v1/requests/{req['id']}").json()["status"] == "released"
    # The customer no longer sees the host it gave back.
    assert world.get("cust_a", f"/v1/hosts/{host['id']}").status_code == 404


def test_failed_phase_is_retried_then_fails_with_reason(world: World) -> None:
    host = world.enroll("node1", labels={"fail_phase": "firewall"})
    job = world.wait_job(world.request().json()["job_ids"][0])
    assert job["status"] == "failed"
    assert "phase firewall failed" in job["error"] and "asked to fail in firewall" in job["error"]
    fw = next(p for p in job["phases"] if p["name"] == "firewall")
    assert fw["attempts"] == 2  # idempotent phase: retried once
    assert [p["name"] for p in job["phases"]][-1] == "firewall"  # later phases never ran
    assert job["slo_met"] is False
    h = world.get("operator", f"/v1/hosts/{host['id']}").json()
    assert h["state"] == "failed"
    assert world.get("cust_a", f"/v1/requests/{job['request_id']}").json()["status"] == "failed"


def test_cancel_running_job_stops_the_process_group(world: World) -> None:
    marker = sleep_marker(31)
    world.enroll("node1", labels={"sleep": marker})
    job_id = world.request().json()["job_ids"][0]
    deadline = time.monotonic() + 60
    while not sleepers(marker):
        assert time.monotonic() < deadline, "the phase never started"
        time.sleep(0.2)
    t0 = time.monotonic()
    r = world.post("cust_a", f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202, r.text
    job = world.wait_job(job_id, timeout=10)
    took = time.monotonic() - t0
    assert job["status"] == "cancelled", job
    assert took < 5, f"cancel took {took:.1f}s"
    assert "cancelled during phase wipe" in job["error"]
    # The job is settled only after the process tree was stopped: nothing may be left by now.
    assert not sleepers(marker), "ansible's child process survived the cancel"
    assert world.post("cust_a", f"/v1/jobs/{job_id}/cancel").status_code == 409


def test_cancel_queued_job_frees_host(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.harness import base_env, running_app

    # One worker thread: the second job has to wait in the queue, where we cancel it.
    with running_app(base_env(tmp_path, PROVISIONER_WORKER_THREADS="1")) as w:
        w.enroll("busy", labels={"sleep": "2", "sleep_phase": "wipe"}, pool="p1")
        idle = w.enroll("idle", pool="p2")
        first = w.request(pool="p1").json()
        second = w.request(pool="p2").json()
        job_id = second["job_ids"][0]
        assert w.get("cust_a", f"/v1/jobs/{job_id}").json()["status"] == "queued"
        r = w.post("cust_a", f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
        job = w.get("cust_a", f"/v1/jobs/{job_id}").json()
        assert job["started_at"] is None and "before it started" in job["error"]
        # Never touched: the host goes straight back to the pool, the request is marked failed.
        h = w.get("operator", f"/v1/hosts/{idle['id']}").json()
        assert h["state"] == "available" and h["tenant_id"] is None
        assert w.get("cust_a", f"/v1/requests/{second['id']}").json()["status"] == "failed"
        # The worker later pops the cancelled job's message: a no-op.
        assert w.wait_job(first["job_ids"][0])["status"] == "succeeded"
        assert w.get("cust_a", f"/v1/jobs/{job_id}").json()["attempts"] == 0


def test_phase_timeout_stops_the_tree_and_fails_with_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.harness import base_env, running_app

    marker = sleep_marker(41)
    with running_app(base_env(tmp_path, PROVISIONER_PHASE_TIMEOUTS='{"wipe": 3}')) as w:
        w.enroll("node1", labels={"sleep": marker})
        t0 = time.monotonic()
        job = w.wait_job(w.request().json()["job_ids"][0], timeout=180)
        assert job["status"] == "failed" and job["error"] == "phase wipe timed out after 3s", job
        wipe = next(p for p in job["phases"] if p["name"] == "wipe")
        assert wipe["attempts"] == 1 and wipe["duration_s"] < 10  # a timeout is not retried
        assert time.monotonic() - t0 < 120
        assert not sleepers(marker), "the timed-out phase left processes behind"


def test_insufficient_capacity_is_a_clear_409(world: World) -> None:
    world.enroll("node1")
    r = world.request(count=2)
    assert r.status_code == 409
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert body["code"] == "capacity.insufficient" and body["wanted"] == 2 and "hint" in body
    # Nothing was written: the host stays available, no request exists.
    assert world.get("operator", "/v1/requests").json()["total"] == 0
    assert world.get("operator", "/v1/hosts").json()["items"][0]["state"] == "available"


def test_constraints_pick_matching_host(world: World) -> None:
    world.enroll("small", labels={"cpus": "2"})
    big = world.enroll("big", labels={"cpus": "16", "rack": "r1"})
    r = world.request(constraints={"min_cpus": 8, "labels": {"rack": "r1"}})
    assert r.status_code == 202, r.text
    assert r.json()["host_ids"] == [big["id"]]


def test_audit_records_mutations(world: World) -> None:
    world.enroll("node1")
    job_id = world.request().json()["job_ids"][0]
    assert world.wait_job(job_id)["status"] == "succeeded"
    items = world.get("auditor", "/v1/audit", params={"limit": 200}).json()["items"]
    actions = {i["action"] for i in items}
    missing = {"admin.init", "tenant.create", "user.create", "token.create", "host.enroll",
               "request.create", "job.succeeded", "host.state"} - actions
    assert not missing, f"not audited: {sorted(missing)}"
    enroll = next(i for i in items if i["action"] == "host.enroll")
    assert enroll["actor_name"] == "operator" and enroll["after"]["name"] == "node1"
    assert enroll["request_id"]
    # Append-only: the API has no way to change or delete entries.
    assert world.client.delete("/v1/audit", headers=world.h("admin")).status_code == 405
    assert world.client.put("/v1/audit", headers=world.h("admin")).status_code == 405


def test_ssh_key_never_returned_and_stored_encrypted(world: World, sshd: Sshd) -> None:
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END OPENSSH PRIVATE KEY-----\n"
    # The service reads the host key at enrollment, so a real sshd answers at the address.
    r = world.post("operator", "/v1/hosts", {"name": "ssh1", "address": "127.0.0.1", "port": sshd.port,
                                             "ssh_private_key": pem, "commission": False})
    assert r.status_code == 201, r.text
    assert "PRIVATE" not in r.text and r.json()["credential"] == "stored"
    assert "PRIVATE" not in world.get("operator", f"/v1/hosts/{r.json()['id']}").text
    audit = world.get("admin", "/v1/audit", params={"action": "host.enroll"}).text
    assert "c2VjcmV0" not in audit
    from sqlmodel import select

    from provisioner.store.db import session_scope
    from provisioner.store.models import Host

    with session_scope() as s:
        row = s.exec(select(Host).where(Host.name == "ssh1")).one()
        assert row.credential_ciphertext and "c2VjcmV0" not in row.credential_ciphertext


def test_metrics_expose_jobs(world: World) -> None:
    world.enroll("node1")
    text = world.client.get("/metrics", headers=world.h("operator")).text
    assert 'provisioner_hosts{state="available"} 1.0' in text
    assert 'provisioner_jobs_finished_total{kind="commission",reason="",status="succeeded"} 1.0' in text
