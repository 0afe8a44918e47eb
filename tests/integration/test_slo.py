"""SLOs and /metrics over real jobs (SQLite and PostgreSQL): the report from the job rows, the
running totals settle() keeps, the per-process HTTP histogram, the API's scoping and bad input."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from provisioner.services.job_tally import BUCKETS
from provisioner.services.slo_report import slo_report
from provisioner.store.db import session_scope
from provisioner.store.models import Host, Job
from tests.integration.harness import World
from tests.integration.test_dashboard import signed_in

# No-op test phases took 15-27 s each while eight sessions shared two cores: be patient.
PATIENCE = 600


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float | None:
    return m.get((name, frozenset(labels.items())))


def test_slo_report_and_metrics_follow_real_jobs(world: World) -> None:
    w = world
    ok = w.enroll("node-ok", pool="a")
    w.enroll("node-bad", pool="b", labels={"fail_phase": "firewall"})
    good = w.wait_job(w.request(pool="a").json()["job_ids"][0], timeout=PATIENCE)
    bad = w.wait_job(w.request(pool="b").json()["job_ids"][0], timeout=PATIENCE)
    assert (good["status"], bad["status"]) == ("succeeded", "failed"), (good, bad)
    check = w.wait_job(w.post("operator", f"/v1/hosts/{ok['id']}/compliance-check").json()["id"], timeout=PATIENCE)
    assert check["status"] == "succeeded"

    r = w.get("operator", "/v1/slo")
    assert r.status_code == 200, r.text
    slos = {s["name"]: s for s in r.json()["slos"]}
    hand = slos["provision-handover"]
    assert (hand["events"], hand["good"], hand["bad"]) == (2, 1, 1)
    assert hand["period"] == "28d" and hand["threshold_s"] == 1800
    # 1 bad of 2 at a 1 % budget: 50 budgets spent, and every alert pair sees it in both windows.
    assert hand["budget_remaining"] == pytest.approx(-49.0)
    assert hand["burn_rates"]["5m"] == pytest.approx(50.0)
    assert {a["name"] for a in hand["alerts"] if a["firing"]} == {"fast-1h", "fast-6h", "slow-1d", "slow-3d"}
    assert (slos["restore-test"]["events"], slos["restore-test"]["good"]) == (1, 1)
    assert slos["restore-test"]["budget_remaining"] == 1.0
    assert slos["release"]["events"] == 0 and slos["release"]["burn_rates"]["1h"] is None
    assert w.get("auditor", "/v1/slo").status_code == 200
    # A customer reads their own tenant's SLOs (both jobs are acme's); the imaging team has no reports:read.
    mine = {s["name"]: s for s in w.get("cust_a", "/v1/slo").json()["slos"]}
    assert (mine["provision-handover"]["events"], mine["provision-handover"]["bad"]) == (2, 1)
    assert w.get("cust_b", "/v1/slo").json()["slos"][0]["events"] == 0
    denied = w.get("imager", "/v1/slo")
    assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"

    m = samples(w.get("operator", "/metrics").text)
    dur = "provisioner_job_duration_seconds"
    assert value(m, f"{dur}_count", kind="provision", status="succeeded") == 1
    assert value(m, f"{dur}_count", kind="provision", status="failed") == 1
    assert value(m, f"{dur}_bucket", kind="provision", status="succeeded", le="+Inf") == 1
    took = good["sli"]["total_s"]
    assert value(m, f"{dur}_sum", kind="provision", status="succeeded") == pytest.approx(took, abs=0.01)
    upper = min(b for b in BUCKETS if b >= took)
    below = [b for b in BUCKETS if b < upper]
    assert value(m, f"{dur}_bucket", kind="provision", status="succeeded", le=repr(float(upper))) == 1
    if below:
        assert value(m, f"{dur}_bucket", kind="provision", status="succeeded", le=repr(float(below[-1]))) == 0
    assert value(m, "provisioner_jobs_finished_total", kind="provision", status="failed", reason="phase_failed") == 1
    assert value(m, "provisioner_jobs_finished_total", kind="compliance", status="succeeded", reason="") == 1
    phase = "provisioner_phase_duration_seconds_count"
    assert value(m, phase, kind="provision", phase="firewall", status="failed") == 1
    assert value(m, phase, kind="provision", phase="firewall", status="succeeded") == 1
    assert value(m, phase, kind="provision", phase="handover", status="succeeded") == 1
    events = "provisioner_slo_events_total"
    assert value(m, events, slo="provision-handover", outcome="good") == 1
    assert value(m, events, slo="provision-handover", outcome="bad") == 1
    assert value(m, events, slo="restore-test", outcome="good") == 1
    assert value(m, events, slo="release", outcome="bad") == 0  # present before the first event
    assert value(m, "provisioner_slo_objective", slo="restore-test") == 0.999
    # The running totals and the report from the job rows judge the same jobs the same way.
    for name, s in slos.items():
        assert (value(m, events, slo=name, outcome="good"), value(m, events, slo=name, outcome="bad")) == (
            s["good"], s["bad"]), name
    assert value(m, "provisioner_pool_hosts", pool="a", state="active") == 1
    assert value(m, "provisioner_pool_hosts", pool="b", state="failed") == 1
    assert value(m, "provisioner_compliance_hosts", state="compliant") == 1
    # provisioner_jobs counts live jobs: none is left, so no provision series at all.
    assert not [k for k in m if k[0] == "provisioner_jobs" and dict(k[1])["kind"] == "provision"]
    http = [(k, v) for k, v in m.items() if k[0] == "provisioner_http_request_duration_seconds_count"
            and dict(k[1])["route"] == "/v1/jobs/{job_id}" and dict(k[1])["status"] == "200"]
    assert http and http[0][1] >= 3 and dict(http[0][0][1])["process"].endswith(":" + str(__import__("os").getpid()))
    assert w.client.get("/metrics").status_code == 401
    assert w.get("cust_a", "/metrics").status_code == 403


def test_a_restore_that_fails_its_check_spends_the_restore_budget(sqlite_world: World) -> None:
    w = sqlite_world
    host = w.enroll("node1", labels={"restore_ok": "no"})
    assert w.wait_job(w.request().json()["job_ids"][0], timeout=PATIENCE)["status"] == "succeeded"
    check = w.wait_job(w.post("operator", f"/v1/hosts/{host['id']}/compliance-check").json()["id"],
                       timeout=PATIENCE)
    assert check["status"] == "succeeded"  # the check ran; its restore did not pass
    restore = next(s for s in w.get("operator", "/v1/slo").json()["slos"] if s["name"] == "restore-test")
    assert (restore["events"], restore["bad"]) == (1, 1)
    assert restore["budget_remaining"] == pytest.approx(-999.0)
    m = samples(w.get("operator", "/metrics").text)
    assert value(m, "provisioner_slo_events_total", slo="restore-test", outcome="bad") == 1
    assert value(m, "provisioner_compliance_hosts", state="noncompliant") == 1
    assert value(m, "provisioner_compliance_violations", code="restore.failed") == 1

    op = signed_in(w, "operator").get("/ui").text
    table = re.search(r'<table id="slos">.*?</table>', op, re.S)
    assert table, op
    row = re.search(r'restore-test</td>.*?</tr>', table.group(0), re.S)
    assert row and "-99900.0%" in row.group(0) and "fast-1h" in row.group(0), row
    budget = re.search(r'<div id="budget">.*?</div>\s*</div>', op, re.S)
    assert budget and "error budget left: 100.0%" in budget.group(0) and "0 bad of 1" in budget.group(0)
    customer = signed_in(w, "cust_a").get("/ui").text
    assert 'id="budget"' in customer and 'id="slos"' in customer  # their own tenant's SLO table
    assert 'id="slos"' not in signed_in(w, "imager").get("/ui").text  # the table needs reports:read
    other = signed_in(w, "cust_b").get("/ui").text  # another tenant: none of acme's jobs
    assert "0 bad of 0" in other and "error budget left: 100.0%" in other


END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _job(host_id: int, tenant_id: int | None, status: str, *, ago: timedelta, took: float,
         kind: str = "provision") -> dict[str, Any]:
    end = END - ago
    start = end - timedelta(seconds=took)
    live = status in ("queued", "running")
    return dict(kind=kind, host_id=host_id, tenant_id=tenant_id, status=status, accepted_at=start, queued_at=start,
                started_at=None if status == "queued" else start, finished_at=None if live else end)


def test_report_over_a_synthetic_history(sqlite_world: World) -> None:
    w = sqlite_world
    acme, globex = w.ids["acme"], w.ids["globex"]
    day = timedelta(days=1)
    with session_scope() as s:
        host = Host(name="h", address="192.0.2.1")
        s.add(host)
        s.flush()
        hid = host.id or 0
        s.add_all(Job(**row) for row in [
            _job(hid, acme, "succeeded", ago=timedelta(minutes=2), took=600),
            _job(hid, acme, "succeeded", ago=timedelta(minutes=3), took=1801),      # too slow: bad
            _job(hid, globex, "failed", ago=2 * day, took=60),                      # failed: bad
            _job(hid, globex, "cancelled", ago=2 * day, took=60),                   # not counted
            _job(hid, acme, "running", ago=day, took=60),                           # not finished
            {**_job(hid, acme, "running", ago=2 * day, took=60), "claim_until": END},  # its worker is gone
            _job(hid, acme, "queued", ago=3 * day, took=60, kind="release"),
            *[_job(hid, globex, "succeeded", ago=10 * day, took=900) for _ in range(97)],
            _job(hid, acme, "failed", ago=30 * day, took=60),                       # before the period
            _job(hid, acme, "failed", ago=-timedelta(minutes=1), took=60),          # after END
        ])
        s.commit()
        hand = {st.slo.name: st for st in slo_report(s, end=END)}["provision-handover"]
        assert (hand.events, hand.good) == (100, 98)
        assert hand.budget_remaining == pytest.approx(-1.0)
        burns = {b.window: b for b in hand.burns}
        assert (burns[timedelta(minutes=5)].events, burns[timedelta(minutes=5)].bad) == (2, 1)
        assert (burns[timedelta(days=3)].events, burns[timedelta(days=3)].bad) == (3, 2)
        week = {st.slo.name: st for st in slo_report(s, end=END, period=timedelta(days=7))}["provision-handover"]
        assert (week.events, week.good) == (3, 1)
        mine = {st.slo.name: st for st in slo_report(s, end=END, tenant_id=acme)}["provision-handover"]
        assert (mine.events, mine.good) == (2, 1)
        # The service review's question: how did an earlier week do?
        past = {st.slo.name: st for st in slo_report(s, end=END - 7 * day, period=7 * day)}["provision-handover"]
        assert (past.events, past.good, past.budget_remaining) == (97, 97, 1.0)

    m = samples(w.get("operator", "/metrics").text)
    assert value(m, "provisioner_jobs", kind="provision", status="running") == 2
    assert value(m, "provisioner_jobs", kind="release", status="queued") == 1
    assert value(m, "provisioner_jobs_claim_expired", kind="provision") == 1
    age = (datetime.now(UTC) - (END - 2 * day - timedelta(seconds=60))).total_seconds()
    assert value(m, "provisioner_job_oldest_seconds", kind="provision", status="running") == pytest.approx(age, abs=60)
    age = (datetime.now(UTC) - (END - 3 * day - timedelta(seconds=60))).total_seconds()
    assert value(m, "provisioner_job_oldest_seconds", kind="release", status="queued") == pytest.approx(age, abs=60)

    r = w.get("operator", "/v1/slo", params={"end": "2026-06-01T12:00:00Z", "period_days": 7})
    hand_doc = next(d for d in r.json()["slos"] if d["name"] == "provision-handover")
    assert (hand_doc["events"], hand_doc["bad"], hand_doc["period"]) == (3, 2, "7d")
    assert hand_doc["start"] == "2026-05-25T12:00:00.000Z"


@pytest.mark.parametrize("params,code", [
    ({"period_days": "0"}, "request.invalid"),
    ({"period_days": "401"}, "request.invalid"),
    ({"period_days": "a week"}, "request.invalid"),
    ({"end": "yesterday"}, "request.invalid"),
])
def test_bad_input_is_a_problem(sqlite_world: World, params: dict, code: str) -> None:
    r = sqlite_world.get("operator", "/v1/slo", params=params)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == code and body["detail"]
