"""Ratings of delivered requests: once per request, by the tenant's members; a low one is an
escalation operators see until one of them answers it; every step audited; the review's summary."""

from __future__ import annotations

from sqlmodel import Session, col, select

from provisioner.core.timeutil import utcnow
from provisioner.services import ratings
from provisioner.store.db import get_engine
from provisioner.store.models import AuditEntry, HostRequest
from tests.integration.harness import World


def test_low_rating_is_an_escalation_until_answered(world: World) -> None:
    w = world
    w.enroll("node1")
    req = w.request().json()
    w.wait_job(req["job_ids"][0], timeout=400)
    rid = req["id"]
    assert w.get("cust_a", f"/v1/requests/{rid}").json()["status"] == "ready"

    bad = [("cust_a", {"score": 7}, 422, "request.invalid"), ("cust_a", {"score": 0}, 422, "request.invalid"),
           ("cust_b", {"score": 1}, 404, "request.not_found"), ("operator", {"score": 1}, 403, "auth.forbidden")]
    for who, body, status, code in bad:
        r = w.post(who, f"/v1/requests/{rid}/rating", body)
        assert (r.status_code, r.json()["code"]) == (status, code), (who, r.text)
    assert w.get("cust_a", f"/v1/requests/{rid}/rating").status_code == 404  # nothing half-written

    r = w.post("cust_a", f"/v1/requests/{rid}/rating", {"score": 2, "comment": "RAID took ages"})
    assert r.status_code == 201, r.text
    rating = r.json()
    assert rating["escalation"] == "open" and rating["comment"] == "RAID took ages"
    r = w.post("cust_a", f"/v1/requests/{rid}/rating", {"score": 5})
    assert (r.status_code, r.json()["code"]) == (409, "rating.exists")

    assert w.get("cust_a", "/v1/escalations").status_code == 403
    for who in ("operator", "auditor", "admin"):
        assert [e["id"] for e in w.get(who, "/v1/escalations").json()["items"]] == [rating["id"]]
    assert w.post("auditor", f"/v1/escalations/{rating['id']}/answer", {"answer": "x"}).status_code == 403
    r = w.post("operator", f"/v1/escalations/{rating['id']}/answer", {"answer": "disk firmware fixed"})
    assert r.status_code == 200 and r.json()["escalation"] == "answered" and r.json()["answered_by"] == "operator"
    r = w.post("admin", f"/v1/escalations/{rating['id']}/answer", {"answer": "again"})
    assert (r.status_code, r.json()["code"]) == (409, "escalation.answered")
    assert w.get("operator", "/v1/escalations").json()["items"] == []
    assert w.get("operator", "/v1/escalations", params={"status": "answered"}).json()["total"] == 1

    with Session(get_engine()) as s:
        actions = [a.action for a in s.exec(select(AuditEntry).where(col(AuditEntry.action).in_(
            ["request.rate", "escalation.open", "escalation.answer"])).order_by(col(AuditEntry.id))).all()]
        assert actions == ["request.rate", "escalation.open", "escalation.answer"]
        assert ratings.summary(s) == {"count": 1, "mean": 2.0, "distribution": {1: 0, 2: 1, 3: 0, 4: 0, 5: 0},
                                      "low": 1, "open_escalations": 0}


def test_only_delivered_requests_can_be_rated_and_good_ones_open_nothing(sqlite_world: World) -> None:
    w = sqlite_world
    with Session(get_engine()) as s:
        pending = HostRequest(tenant_id=w.ids["acme"], requested_by=w.ids["cust_a"], image=None, count=1)
        s.add(pending)
        s.commit()
        pending_id = pending.id
    r = w.post("cust_a", f"/v1/requests/{pending_id}/rating", {"score": 5})
    assert (r.status_code, r.json()["code"]) == (409, "rating.not_delivered") and r.json()["hint"]
    with Session(get_engine()) as s:
        req = s.get(HostRequest, pending_id)
        assert req is not None
        req.status, req.ready_at = "ready", utcnow()
        s.add(req)
        s.commit()
    r = w.post("cust_a", f"/v1/requests/{pending_id}/rating", {"score": 4, "comment": "fine"})
    assert r.status_code == 201 and r.json()["escalation"] is None
    assert w.get("operator", "/v1/escalations").json()["total"] == 0
    assert w.get("cust_a", f"/v1/requests/{pending_id}/rating").json()["score"] == 4
