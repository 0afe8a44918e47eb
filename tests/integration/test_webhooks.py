"""Webhooks end to end: a job's end is written to the outbox in its own transaction, the dispatcher
sends it signed to a real HTTP receiver on 127.0.0.1, which verifies the Standard Webhooks signature;
a receiver that is down gets retries with backoff and receives the event once it is back; the
tenant reads every attempt in the delivery log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from provisioner.services import webhooks
from provisioner.store.config import get_settings
from provisioner.store.db import get_engine
from provisioner.store.notify_models import Webhook, WebhookAttempt, WebhookDelivery
from tests.integration.harness import World, base_env, running_app
from tests.integration.procs import free_port
from tests.integration.webhook_receiver import Receiver
from workers.webhook_dispatch import deliver_due

FAST = {"PROVISIONER_WEBHOOK_POLL_SECONDS": "0.2", "PROVISIONER_WEBHOOK_BACKOFF_SECONDS": "0.3",
        "PROVISIONER_WEBHOOK_BACKOFF_CAP_SECONDS": "1", "PROVISIONER_WEBHOOK_MAX_ATTEMPTS": "50"}


@pytest.fixture(params=["sqlite", "postgresql"])
def hooks_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    db = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    with running_app(base_env(tmp_path, db, **FAST)) as w:
        yield w


@pytest.fixture
def quiet_world(tmp_path: Path) -> Iterator[World]:
    """No background dispatcher: the test runs the passes itself."""
    with running_app(base_env(tmp_path, PROVISIONER_RUN_RECONCILER="0")) as w:
        yield w


def _deliveries(w: World, who: str, hook_id: int) -> list[dict[str, Any]]:
    r = w.get(who, f"/v1/webhooks/{hook_id}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _wait(pred: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def test_job_end_is_delivered_signed_after_the_receiver_comes_back(hooks_world: World) -> None:
    w = hooks_world
    receiver = Receiver(free_port())  # not listening yet: connection refused
    r = w.post("cust_a", "/v1/webhooks", {"url": receiver.url, "events": ["job.succeeded", "job.failed"]})
    assert r.status_code == 201, r.text
    hook = r.json()
    assert hook["secret"].startswith("whsec_") and hook["tenant_id"] == w.ids["acme"]
    receiver.secret = hook["secret"]
    listed = w.get("cust_a", "/v1/webhooks").json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    with Session(get_engine()) as s:
        stored = s.get(Webhook, hook["id"])
        assert stored is not None and hook["secret"] not in stored.secret_ciphertext

    w.enroll("node1")
    job = w.wait_job(w.request().json()["job_ids"][0], timeout=400)
    assert job["status"] == "succeeded"
    # The receiver is down: attempts fail and are logged, the delivery stays pending.
    _wait(lambda: any(d["attempts"] >= 2 for d in _deliveries(w, "cust_a", hook["id"])))
    [pending] = _deliveries(w, "cust_a", hook["id"])
    assert pending["status"] == "pending" and pending["event_type"] == "job.succeeded"
    assert all(a["status_code"] is None and "ConnectError" in a["error"] for a in pending["attempt_log"])

    receiver.start()
    try:
        _wait(lambda: _deliveries(w, "cust_a", hook["id"])[0]["status"] == "delivered")
    finally:
        receiver.stop()
    [done] = _deliveries(w, "cust_a", hook["id"])
    assert done["attempt_log"][-1]["status_code"] == 200 and done["attempt_log"][-1]["latency_ms"] > 0
    assert len(done["attempt_log"]) == done["attempts"] >= 3
    [got] = receiver.got
    assert got.verified, "the receiver could not verify the signature"
    assert got.headers["webhook-id"] == done["msg_id"]
    assert got.payload["type"] == "job.succeeded" and got.payload["data"]["job_id"] == job["id"]
    assert got.payload["data"]["request_id"] == job["request_id"] and got.payload["data"]["status"] == "succeeded"
    # Other tenants do not see the log; auditors have no webhooks.
    assert w.get("cust_b", f"/v1/webhooks/{hook['id']}/deliveries").status_code == 404
    assert w.get("auditor", "/v1/webhooks").status_code == 403


def test_wrong_secret_is_refused_by_the_receiver_and_retried_until_given_up(quiet_world: World) -> None:
    w = quiet_world
    receiver = Receiver(free_port(), secret=webhooks.new_secret()).start()  # not the webhook's secret
    try:
        r = w.post("cust_a", "/v1/webhooks", {"url": receiver.url, "events": ["lease.warning"]})
        assert r.status_code == 201, r.text
        settings = get_settings().model_copy(update={"webhook_backoff_seconds": 0.0, "webhook_max_attempts": 3})
        with Session(get_engine()) as s:
            assert webhooks.emit(s, "lease.warning", {"request_id": 1}, tenant_id=w.ids["acme"]) == 1
            assert webhooks.emit(s, "lease.warning", {"request_id": 1}, tenant_id=w.ids["globex"]) == 0
            s.commit()
        totals = {"delivered": 0, "retrying": 0, "failed": 0}
        for _ in range(3):
            for k, v in deliver_due(settings).items():
                totals[k] += v
        assert totals == {"delivered": 0, "retrying": 2, "failed": 1}
        assert len(receiver.got) == 3 and not any(g.verified for g in receiver.got)
        # Every retry sent the same message: same id, same bytes.
        assert len({g.headers["webhook-id"] for g in receiver.got}) == 1 and len({g.body for g in receiver.got}) == 1
        with Session(get_engine()) as s:
            d = s.exec(select(WebhookDelivery)).one()
            assert d.status == "failed" and d.attempts == 3 and d.last_error == "HTTP 401 Unauthorized"
            assert [a.status_code for a in s.exec(select(WebhookAttempt)).all()] == [401, 401, 401]
    finally:
        receiver.stop()


def test_bad_webhooks_are_refused_with_a_code(sqlite_world: World) -> None:
    w = sqlite_world
    cases = [
        ({"url": "http://example.com/hook", "events": ["job.failed"]}, 422, "webhook.url_invalid"),
        ({"url": "ftp://127.0.0.1/x", "events": ["job.failed"]}, 422, "webhook.url_invalid"),
        ({"url": "https://user:pw@example.com/x", "events": ["job.failed"]}, 422, "webhook.url_invalid"),
        ({"url": "https://example.com/x", "events": ["job.exploded"]}, 422, "webhook.events_invalid"),
        ({"url": "https://example.com/x", "events": []}, 422, "request.invalid"),
        ({"url": "https://example.com/x", "events": ["job.failed"], "tenant_id": w.ids["globex"]}, 403,
         "webhook.other_tenant"),
    ]
    for body, status, code in cases:
        r = w.post("cust_a", "/v1/webhooks", body)
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
        assert r.json().get("hint")
    r = w.post("admin", "/v1/webhooks", {"url": "https://example.com/x", "events": ["job.failed"]})
    assert (r.status_code, r.json()["code"]) == (422, "webhook.tenant_required")
    assert w.get("admin", "/v1/webhooks").json()["total"] == 0  # nothing half-written


def test_removing_a_webhook_ends_its_pending_deliveries_and_keeps_the_log(quiet_world: World) -> None:
    w = quiet_world
    hook = w.post("cust_a", "/v1/webhooks", {"url": "https://example.invalid/h", "events": ["image.promoted"]}).json()
    with Session(get_engine()) as s:
        # Catalogue events reach every tenant's subscribers.
        assert webhooks.emit(s, "image.promoted", {"image_id": 1}, tenant_id=None) == 1
        s.commit()
    assert w.client.delete(f"/v1/webhooks/{hook['id']}", headers=w.h("cust_b")).status_code == 404
    assert w.client.delete(f"/v1/webhooks/{hook['id']}", headers=w.h("cust_a")).status_code == 204
    [d] = _deliveries(w, "cust_a", hook["id"])
    assert d["status"] == "failed" and d["last_error"] == "webhook removed"
    assert json.loads(d["body"])["type"] == "image.promoted"
    assert w.get("cust_a", "/v1/webhooks").json()["items"] == []


def test_lease_warning_and_image_deprecation_write_outbox_rows_with_their_event(quiet_world: World) -> None:
    from datetime import timedelta

    from provisioner.core.timeutil import utcnow
    from provisioner.store.image_models import Image
    from provisioner.store.models import HostRequest
    from workers.leases import expire_leases

    w = quiet_world
    a = w.post("cust_a", "/v1/webhooks", {"url": "https://a.invalid/h", "events": ["lease.warning",
                                                                                 "image.deprecated"]}).json()
    b = w.post("cust_b", "/v1/webhooks", {"url": "https://b.invalid/h", "events": ["image.deprecated"]}).json()
    with Session(get_engine()) as s:
        req = HostRequest(tenant_id=w.ids["acme"], requested_by=w.ids["cust_a"], image=None, count=1,
                          status="ready", lease_expires_at=utcnow() + timedelta(minutes=10))
        img = Image(name="deb", version="1", os_name="debian", os_version="12", format_in="raw", channel="stable",
                    size=1, sha256="0" * 64, published_by="imager")
        s.add(req)
        s.add(img)
        s.commit()
        req_id, img_id = req.id, img.id
    assert expire_leases(get_settings())["warned"] == 1
    r = w.post("imager", f"/v1/images/{img_id}/promote", {"to": "deprecated", "reason": "successor out"})
    assert r.status_code == 200, r.text
    got_a = {d["event_type"]: json.loads(d["body"])["data"] for d in _deliveries(w, "cust_a", a["id"])}
    assert got_a["lease.warning"]["request_id"] == req_id and got_a["lease.warning"]["minutes_left"] <= 10
    assert got_a["image.deprecated"]["image_id"] == img_id
    [to_b] = _deliveries(w, "cust_b", b["id"])
    assert to_b["event_type"] == "image.deprecated"  # catalogue events reach every tenant's subscribers
