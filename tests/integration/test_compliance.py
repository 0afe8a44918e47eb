"""Continuous compliance through the job engine: checks on demand and on schedule, verdicts with
reasons per host, per tenant and fleet-wide, audit entries when a host turns non-compliant."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.harness import World, base_env, running_app


def provision(w: World, name: str, **labels: str) -> dict:
    host = w.enroll(name, labels=labels)
    req = w.request().json()
    assert w.wait_job(req["job_ids"][0], timeout=400)["status"] == "succeeded"
    return w.get("operator", f"/v1/hosts/{host['id']}").json()


@pytest.mark.parametrize("labels,code", [
    ({"raid_state": "degraded"}, "raid.degraded"),
    ({"fw_policy": "accept"}, "firewall.default_deny_required"),
    ({"restore_ok": "no"}, "restore.failed"),
])
def test_check_on_demand_finds_drift(sqlite_world: World, labels: dict, code: str) -> None:
    w = sqlite_world
    hook = w.post("cust_a", "/v1/webhooks", {"url": "https://drift.invalid/h", "events": ["compliance.drift"]}).json()
    host = provision(w, "node1", **labels)
    r = w.post("operator", f"/v1/hosts/{host['id']}/compliance-check")
    assert r.status_code == 202, r.text
    job = w.wait_job(r.json()["id"])
    assert job["status"] == "succeeded" and job["kind"] == "compliance"
    h = w.get("cust_a", f"/v1/hosts/{host['id']}").json()
    assert h["state"] == "active"  # a check observes; it does not change the host
    assert h["compliance"]["compliant"] is False
    assert code in {v["code"] for v in h["compliance"]["violations"]}, h["compliance"]
    summary = w.get("cust_a", "/v1/compliance").json()
    assert summary["fleet"] == {"active": 1, "compliant": 0, "noncompliant": 1, "unchecked": 0}
    assert summary["noncompliant"][0]["host_id"] == host["id"]
    assert w.get("cust_b", "/v1/compliance").json()["fleet"]["active"] == 0
    audit = w.get("auditor", "/v1/audit", params={"action": "host.noncompliant"}).json()["items"]
    assert audit and code in audit[0]["after"]["codes"]
    # The drift is announced to the tenant's webhook, from the transaction that stored the verdict.
    [drift] = w.get("cust_a", f"/v1/webhooks/{hook['id']}/deliveries").json()["items"]
    data = json.loads(drift["body"])["data"]
    assert drift["event_type"] == "compliance.drift" and data["host_id"] == host["id"]
    assert code in {v["code"] for v in data["violations"]}


def test_healthy_host_stays_compliant_and_restore_date_moves(sqlite_world: World) -> None:
    w = sqlite_world
    host = provision(w, "node1")
    before = host["last_restore_at"]
    job = w.wait_job(w.post("operator", f"/v1/hosts/{host['id']}/compliance-check").json()["id"])
    assert job["status"] == "succeeded"
    h = w.get("operator", f"/v1/hosts/{host['id']}").json()
    assert h["compliance"]["compliant"] is True and h["compliance"]["violations"] == []
    assert before is not None and h["last_restore_at"] > before, (before, h["last_restore_at"])


def test_only_active_hosts_are_checked(sqlite_world: World) -> None:
    w = sqlite_world
    host = w.enroll("node1")
    r = w.post("operator", f"/v1/hosts/{host['id']}/compliance-check")
    assert r.status_code == 409 and r.json()["code"] == "host.not_active"
    assert w.post("cust_a", f"/v1/hosts/{host['id']}/compliance-check").status_code == 403


def test_scheduled_checks_run_through_the_reconciler(tmp_path: Path) -> None:
    with running_app(base_env(tmp_path, PROVISIONER_COMPLIANCE_INTERVAL_SECONDS="2")) as w:
        host = provision(w, "node1", raid_state="degraded")
        deadline = time.monotonic() + 60
        while True:
            h = w.get("operator", f"/v1/hosts/{host['id']}").json()
            if h["compliance"].get("compliant") is False:
                break
            assert time.monotonic() < deadline, f"no scheduled check in 60s: {h['compliance']}"
            time.sleep(0.5)
        assert "raid.degraded" in {v["code"] for v in h["compliance"]["violations"]}
        jobs = w.get("operator", "/v1/jobs", params={"kind": "compliance"}).json()["items"]
        assert jobs and all(j["host_id"] == host["id"] for j in jobs)
