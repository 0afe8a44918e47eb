"""The service review over a seeded history shows exactly the numbers the seed implies (SQLite and
the real PostgreSQL, schema from the migrations), and the SLO counts made in SQL equal the ones
made by reading every row and judging it in Python."""

from __future__ import annotations

import os
import random
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from provisioner.services.service_review import review, weekly
from provisioner.services.slo_report import slo_report, slo_report_by_rows
from provisioner.store.config import Settings
from provisioner.store.db import make_engine, session_scope
from provisioner.store.guardrail_models import Waiver
from provisioner.store.image_models import Image
from provisioner.store.migrate import upgrade
from provisioner.store.models import AuditEntry, Host, HostRequest, Job, Tenant, User
from provisioner.store.notify_models import Rating
from tests.integration.harness import World
from tests.integration.procs import Service
from tests.integration.test_cli import BIN, cli
from tests.integration.test_dashboard import signed_in

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def session(bare_engine: Engine) -> Iterator[Session]:
    upgrade(bare_engine)
    with Session(bare_engine) as s:
        yield s


def _job(host: Host, tenant: int | None, status: str, ago: timedelta, took: float, kind: str = "provision",
         phases: list[dict[str, Any]] | None = None, **kw: Any) -> Job:
    done = END - ago
    return Job(kind=kind, host_id=host.id or 0, tenant_id=tenant, status=status, accepted_at=done - timedelta(
        seconds=took), queued_at=done - timedelta(seconds=took), started_at=done - timedelta(seconds=took),
        finished_at=done, phases=phases or [], **kw)


def _image(took: float, status: str = "succeeded") -> list[dict[str, Any]]:
    return [{"name": "image", "status": status, "duration_s": took}]


def seed(s: Session) -> dict[str, int]:
    tenants = {t.name: t for t in s.exec(select(Tenant)).all()}  # a running service made them already
    acme, globex = tenants.get("acme") or Tenant(name="acme"), tenants.get("globex") or Tenant(name="globex")
    s.add_all([acme, globex])
    s.flush()
    a, g = acme.id or 0, globex.id or 0
    op = User(name="seed-op", role="operator")
    cust = User(name="seed-cust", role="customer", tenant_id=a)
    s.add_all([op, cust])
    s.flush()
    hosts = {name: Host(name=f"seed-{name}", address="192.0.2.1", pool=pool, state=state, tenant_id=t,
                        last_restore_at=at, last_restore_passed=ok)
             for name, pool, state, t, at, ok in [
                 ("a1", "a", "active", a, END - 2 * DAY, True), ("a2", "a", "active", a, None, None),
                 ("a3", "a", "available", None, None, None), ("a4", "a", "maintenance", None, None, None),
                 ("b1", "b", "active", g, END - 40 * DAY, False), ("b2", "b", "failed", None, None, None)]}
    s.add_all(hosts.values())
    s.flush()
    a1, b1, b2 = hosts["a1"], hosts["b1"], hosts["b2"]
    s.add_all([
        # acme provisions: 3 good, 1 too slow (and its image phase too), 1 failed in the image phase
        _job(a1, a, "succeeded", 1 * DAY, 600, phases=_image(300)),
        _job(a1, a, "succeeded", 3 * DAY, 600, phases=_image(300)),
        # retried: the first image attempt failed, the last one counts
        _job(a1, a, "succeeded", 5 * DAY, 600, phases=_image(20, "failed") + _image(300), attempts=2),
        _job(a1, a, "succeeded", 2 * DAY, 2000, phases=_image(1000)),
        _job(a1, a, "failed", 1 * DAY, 60, phases=_image(20, "failed"), error_code="phase_failed"),
        _job(a1, a, "cancelled", 1 * DAY, 60, phases=_image(300)),                 # never counted
        # globex: 2 good provisions, 1 failed after a good image, a release between them
        _job(b1, g, "succeeded", 4 * DAY, 600, phases=_image(300)),
        _job(b1, g, "succeeded", 6 * DAY, 600, phases=_image(300)),
        _job(b2, g, "failed", 10 * DAY, 900, phases=_image(100) + [{"name": "firewall", "status": "failed"}],
             error_code="image_corrupt"),
        _job(b1, g, "succeeded", 5 * DAY, 300, kind="release"),
        # compliance checks: two restores passed, one failed
        _job(a1, a, "succeeded", 2 * DAY, 120, kind="compliance", restore_passed=True),
        _job(a1, a, "succeeded", 9 * DAY, 120, kind="compliance", restore_passed=True),
        _job(b1, g, "succeeded", 3 * DAY, 120, kind="compliance", restore_passed=False),
        # outside the period: the previous one's toil, and one after the end
        _job(a1, a, "failed", 30 * DAY, 60, error_code="phase_failed"),
        _job(a1, a, "failed", -DAY, 60, error_code="phase_failed"),
        Job(kind="provision", host_id=a1.id or 0, tenant_id=a, status="queued", accepted_at=END, queued_at=END),
    ])
    img = Image(name="deb12", version="1", os_name="debian", os_version="12", format_in="raw", size=1, sha256="0" * 64,
                published_by="imager")
    s.add(img)
    s.flush()
    s.add_all([
        AuditEntry(at=END - DAY, actor_id=op.id, actor_name="op", action="host.state", object_type="host",
                   object_id=str(hosts["a4"].id), before={"state": "available"}, after={"state": "maintenance"}),
        AuditEntry(at=END - DAY, actor_id=None, actor_name="worker", action="host.state", object_type="host",
                   object_id=str(b2.id), before={"state": "provisioning"}, after={"state": "failed"}),
        AuditEntry(at=END - DAY, actor_id=op.id, actor_name="imager", action="image.promote", object_type="image",
                   object_id=str(img.id), before={"channel": "candidate"}, after={"channel": "stable", "reason": "ok"}),
        AuditEntry(at=END - 8 * DAY, actor_id=op.id, actor_name="op", action="policy.update", object_type="policy",
                   object_id="3", before={"version": 2}, after={"version": 3}),
        Waiver(code="backup.missing", scope="tenant:acme", tenant_id=a, justification="lab", requested_by=cust.id or 0,
               status="approved", decided_by=op.id, decided_at=END - 3 * DAY, expires_at=END + DAY),
        Waiver(code="raid.missing", scope="tenant:acme", tenant_id=a, justification="lab", requested_by=cust.id or 0,
               status="rejected", decided_by=op.id, decided_at=END - 3 * DAY),
    ])
    reqs = [HostRequest(tenant_id=t, requested_by=cust.id or 0, image="deb12", count=1, status="ready")
            for t in (a, g)]
    s.add_all(reqs)
    s.flush()
    s.add_all([Rating(request_id=reqs[0].id or 0, tenant_id=a, user_id=cust.id or 0, score=5,
                      created_at=END - 2 * DAY),
               Rating(request_id=reqs[1].id or 0, tenant_id=g, user_id=cust.id or 0, score=1, comment="slow",
                      created_at=END - 2 * DAY, escalation="open")])
    s.commit()
    return {"acme": a, "globex": g}


def test_the_review_shows_what_the_seed_implies(session: Session) -> None:
    ids = seed(session)
    doc = review(session, end=END)
    assert doc["period"] == {"start": "2026-05-04T12:00:00.000Z", "end": "2026-06-01T12:00:00.000Z", "days": 28.0,
                             "label": "28d"}
    slos = {d["name"]: d for d in doc["slo"]["slos"]}
    assert (slos["provision-handover"]["events"], slos["provision-handover"]["good"]) == (8, 5)
    assert (slos["provision-image"]["events"], slos["provision-image"]["good"]) == (8, 6)
    assert (slos["restore-test"]["events"], slos["restore-test"]["good"]) == (3, 2)
    assert (slos["release"]["events"], slos["release"]["good"]) == (1, 1)
    assert slos["commission"]["events"] == 0
    assert slos["provision-handover"]["budget_remaining"] == pytest.approx(1 - (3 / 8) / 0.01)
    # only release met; reimage-handover is defined but the seed has no reimage
    assert (doc["slo"]["defined"], doc["slo"]["measured"], doc["slo"]["met"]) == (6, 4, 1)
    goals = {g["goal"]: g for g in doc["slo"]["goals"]}
    assert goals["provision-handover"]["previous_attainment"] == 0.0  # the one failure 30 days ago
    assert goals["release"]["met"] is True and goals["commission"]["met"] is None

    assert doc["jobs"]["by_kind"] == {"provision": {"succeeded": 6, "failed": 2, "cancelled": 1},
                                      "release": {"succeeded": 1}, "compliance": {"succeeded": 3}}
    assert doc["jobs"]["finished"] == 13 and doc["jobs"]["live"] == {"queued": 1}
    fleet = doc["fleet"]
    assert fleet["by_state"] == {"active": 3, "available": 1, "maintenance": 1, "failed": 1}
    assert [(p["pool"], p["hosts"], p["capacity"], p["in_use"]) for p in fleet["by_pool"]] == [
        ("a", 4, 3, 2), ("b", 2, 1, 1)]
    integ = doc["integrity"]
    assert integ["restore_tests"] == {"run": 3, "passed": 2, "failed": 1}
    assert (integ["hosts_in_use"], integ["hosts_never_restored"], integ["hosts_restored_in_period"]) == (3, 1, 1)
    assert [(h["host"], h["last_restore_at"]) for h in integ["oldest_last_restore"]] == [
        ("seed-a2", None), ("seed-b1", "2026-04-22T12:00:00.000Z"), ("seed-a1", "2026-05-30T12:00:00.000Z")]
    toil = doc["toil"]
    assert {k: toil[k] for k in ("failed_jobs", "retried_jobs", "manual_host_moves", "waivers_granted",
                                 "escalations_opened", "total", "previous_period_total")} == {
        "failed_jobs": 2, "retried_jobs": 1, "manual_host_moves": 1, "waivers_granted": 1, "escalations_opened": 1,
        "total": 6, "previous_period_total": 1}
    cap = {p["pool"]: p for p in doc["capacity"]}
    # pool a took a host on 05-27, 05-29, 05-30 and 05-31 and released none (2 in use now): undone
    # backwards, the seed (which never enrolled those earlier hosts) goes below zero; the arithmetic shows it.
    series = dict(map(tuple, cap["a"]["series"]))
    assert [series[f"2026-05-{d}"] for d in (26, 27, 28, 29, 30, 31)] + [series["2026-06-01"]] == [
        -2, -1, -1, 0, 1, 2, 2]
    assert len(cap["a"]["series"]) == 28 and cap["a"]["rate_per_day"] > 0
    assert cap["a"]["days_left"] == pytest.approx(1 / cap["a"]["rate_per_day"], abs=0.05)
    assert (cap["b"]["days_left"], cap["b"]["runs_out_on"]) == (0.0, "2026-06-01")  # full already
    assert doc["ratings"]["count"] == 2 and doc["ratings"]["mean"] == 3.0 and doc["ratings"]["open_escalations"] == 1
    assert [e["score"] for e in doc["open_escalations"]] == [1]
    matrix = {r["area"]: r["level"] for r in doc["maturity"]}
    assert matrix == {"SLOs defined and met": 2, "alerts wired": 3, "restores tested": 1, "capacity planned": 2,
                      "toil trend": 1}
    assert {c["table"] for c in doc["catalogue"]} >= {"job", "rating", "auditentry"}

    mine = review(session, end=END, tenant_id=ids["acme"])
    slos = {d["name"]: d for d in mine["slo"]["slos"]}
    assert (slos["provision-handover"]["events"], slos["provision-handover"]["good"]) == (5, 3)
    assert mine["jobs"]["by_kind"]["provision"] == {"succeeded": 4, "failed": 1, "cancelled": 1}
    assert mine["fleet"]["hosts"] == 2 and mine["capacity"] is None
    # no capacity plan is made for a tenant's view, so none is claimed in its matrix
    assert "capacity planned" not in {r["area"] for r in mine["maturity"]}
    assert (mine["toil"]["failed_jobs"], mine["toil"]["waivers_granted"], mine["toil"]["escalations_opened"],
            mine["toil"]["manual_host_moves"]) == (1, 1, 0, 0)
    assert mine["ratings"]["count"] == 1 and mine["open_escalations"] == []

    week = weekly(session, end=END)
    assert week["top_failures"] == [{"kind": "provision", "reason": "phase_failed", "count": 1}]
    assert [(c["image"], c["from"], c["to"]) for c in week["changes"]["images"]] == [("deb12 1", "candidate", "stable")]
    assert week["changes"]["policy"] == []  # 8 days ago
    assert weekly(session, end=END, period=9 * DAY)["changes"]["policy"][0]["version"] == 3
    assert weekly(session, end=END, period=28 * DAY)["top_failures"] == [
        {"kind": "provision", "reason": "image_corrupt", "count": 1},
        {"kind": "provision", "reason": "phase_failed", "count": 1}]


def test_slo_counts_in_sql_equal_the_rows_judged_in_python(session: Session) -> None:
    seed(session)
    rng = random.Random(7)
    host = Host(name="r", address="192.0.2.9")
    session.add(host)
    session.flush()
    kinds = ["provision", "release", "commission", "compliance"]
    for _ in range(600):
        kind = rng.choice(kinds)
        status = rng.choice(["succeeded", "succeeded", "succeeded", "failed", "cancelled"])
        phases = rng.choice([[], _image(rng.uniform(1, 1500)), _image(5, "failed") + _image(rng.uniform(800, 1000)),
                             [{"name": "image", "status": "running"}], [{"name": "image", "status": "succeeded",
                                                                          "duration_s": "n/a"}]])
        session.add(_job(host, None, status, timedelta(seconds=rng.uniform(-3600, 40 * 86400)),
                         rng.choice([rng.uniform(1, 4000), 1800, 900]), kind=kind, phases=phases,
                         restore_passed=rng.choice([None, True, False])))
    session.commit()
    for end, period, tenant in [(END, None, None), (END - 3 * DAY, timedelta(days=7), None), (END, None, 1),
                                (END, timedelta(hours=1), None)]:
        sql = slo_report(session, end=end, period=period, tenant_id=tenant)
        rows = slo_report_by_rows(session, end=end, period=period, tenant_id=tenant)
        assert sql == rows
        assert sum(st.events for st in sql) > (0 if period == timedelta(hours=1) else 8 if tenant else 50)


def test_api_and_markdown_over_the_seed(world: World) -> None:
    """The API answers the same numbers, scoped for a customer, refused (403 problem) to the imaging
    team; Markdown on request."""
    w = world
    with session_scope() as s:
        ids = seed(s)
    q = {"end": "2026-06-01T12:00:00Z"}
    op = w.get("operator", "/v1/review", params=q)
    assert op.status_code == 200, op.text
    hand = next(d for d in op.json()["slo"]["slos"] if d["name"] == "provision-handover")
    assert (hand["events"], hand["good"]) == (8, 5)
    assert op.json()["toil"]["total"] == 6 and op.json()["tenant_id"] is None
    cust = w.get("cust_a", "/v1/review", params=q).json()
    assert cust["tenant_id"] == ids["acme"] and cust["capacity"] is None
    assert next(d for d in cust["slo"]["slos"] if d["name"] == "provision-handover")["events"] == 5
    other = w.get("cust_b", "/v1/review", params=q).json()
    assert next(d for d in other["slo"]["slos"] if d["name"] == "provision-handover")["events"] == 3
    for path in ("/v1/review", "/v1/review/weekly"):
        denied = w.get("imager", path, params=q)
        assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"
        assert denied.json()["code"] == "auth.forbidden" and denied.json()["permission"] == "reports:read"
        assert w.client.get(path).status_code == 401
    md = w.get("operator", "/v1/review", params={**q, "format": "markdown"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert "| provision-handover | 99.0% | 8 | 3 | 62.50% |" in md.text, md.text
    accept = w.client.get("/v1/review/weekly", params=q, headers={**w.h("operator"), "Accept": "text/markdown"})
    assert accept.headers["content-type"].startswith("text/markdown")
    assert "| provision | phase_failed | 1 |" in accept.text and "| deb12 1 | candidate | stable |" in accept.text
    bad = w.get("operator", "/v1/review", params={"period_days": "0"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"

    # The dashboard page: the same numbers, with charts drawn as SVG.
    page = signed_in(w, "operator").get("/ui/review", params={"end": "2026-06-01T12:00:00Z"})
    assert page.status_code == 200, page.text
    row = re.search(r"<tr><td>provision-handover</td>.*?</tr>", page.text, re.S)
    assert row and "<td>8</td><td>3</td>" in row.group(0) and "62.50%" in row.group(0), row
    for chart in ("budget", "states", "ratings", "capacity"):
        assert re.search(rf'<div id="chart-{chart}"><svg [^>]*role="img"', page.text), chart
    assert "seed-a2" in page.text and "<code>rating</code>" in page.text
    mine = signed_in(w, "cust_a").get("/ui/review", params={"end": "2026-06-01T12:00:00Z"}).text
    assert f"(tenant {ids['acme']})" in mine and 'id="chart-capacity"' not in mine
    assert re.search(r"<tr><td>provision-handover</td><td>[^<]*</td><td>5</td>", mine)
    assert signed_in(w, "imager").get("/ui/review").status_code == 403


def test_cli_with_the_readmes_command_line(tmp_path: Path) -> None:
    """`provisioner review --since 28d --format markdown --output FILE` against a running service."""
    data = tmp_path / "data"
    env = {"PROVISIONER_DATA_DIR": str(data)}
    svc = Service(env, tmp_path / "svc.log")
    try:
        env["PROVISIONER_URL"] = svc.url
        env["PROVISIONER_TOKEN"] = cli(env, "admin", "init")["token"]
        engine = make_engine(Settings(data_dir=data, database_url=None).effective_database_url)
        with Session(engine) as s:
            seed(s)
        engine.dispose()
        readme = (Path(__file__).parents[2] / "README.md").read_text()
        line = next(x.strip() for x in readme.splitlines() if x.strip().startswith("provisioner review --since 28d"))
        assert line == "provisioner review --since 28d --format markdown --output review.md"
        out = tmp_path / "review.md"
        full = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")} | env
        r = subprocess.run([str(BIN), *line.split()[1:]], env=full, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        text = out.read_text()
        assert text.startswith("# Service review, 28d: ") and "## Data catalogue" in text
        assert "| restore-test |" in text
        # The seed sits in the past: the same review ending where it ends shows its numbers.
        end = ["--end", "2026-06-01T12:00:00"]
        table = cli(env, "review", "--since", "28d", *end, "--format", "table", ok=False)
        assert table.returncode == 0 and "provision-handover" in table.stdout and "62.50%" in table.stdout, table
        week = cli(env, "review", "weekly", "--since", "7d", *end, "--format", "json")
        assert week["top_failures"][0]["reason"] == "phase_failed"
        bad = cli(env, "review", "--since", "a month", ok=False)
        assert bad.returncode != 0 and "--since" in bad.stderr + bad.stdout
    finally:
        svc.stop()
