"""The webhook dispatcher: sends the outbox (`webhookdelivery` rows), signed the Standard Webhooks way.

One pass takes the pending deliveries that are due, claims each with a compare-and-set on its
`next_attempt_at` (so several API processes running the loop never send one attempt twice),
POSTs the stored body with `webhook-id`, `webhook-timestamp` and `webhook-signature:
v1,base64(HMAC-SHA256(secret, id.timestamp.body))`, and records the attempt (status code, latency,
error) in the delivery log. A 2xx delivers; anything else waits `core.webhook_rules.backoff_seconds`
and tries again, until `webhook_max_attempts` have failed. Errors name the failure, never the
secret or the body.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

import httpx
from sqlalchemy import update
from sqlmodel import Session, col, select
from standardwebhooks import Webhook as Signer

from provisioner.core.timeutil import utcnow
from provisioner.core.webhook_rules import backoff_seconds, is_success
from provisioner.store import secrets as secret_store
from provisioner.store.config import Settings
from provisioner.store.db import get_engine
from provisioner.store.notify_models import Webhook, WebhookAttempt, WebhookDelivery
from workers.periodic import PeriodicLoop

log = logging.getLogger("provisioner.webhooks")

BATCH = 50
USER_AGENT = "provisioner-webhooks/1"


def signed_headers(secret: str, msg_id: str, at: datetime, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Signer(secret).sign(msg_id, at, body),
    }


def _claim(session: Session, d: WebhookDelivery, hold: timedelta) -> bool:
    """Take the delivery for one attempt: push its due time past the attempt's timeout, if nobody did."""
    res = session.exec(update(WebhookDelivery).where(
        col(WebhookDelivery.id) == d.id, col(WebhookDelivery.status) == "pending",
        col(WebhookDelivery.next_attempt_at) == d.next_attempt_at,
    ).values(next_attempt_at=utcnow() + hold))
    session.commit()
    return res.rowcount == 1


def _attempt(client: httpx.Client, url: str, headers: dict[str, str], body: str) -> tuple[int | None, str | None]:
    try:
        resp = client.post(url, content=body.encode(), headers=headers)
    except httpx.HTTPError as exc:
        # The exception's class and text name the network failure; the request (and its headers) are not logged.
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if is_success(resp.status_code):
        return resp.status_code, None
    return resp.status_code, f"HTTP {resp.status_code} {resp.reason_phrase}"[:500]


def deliver_due(settings: Settings, *, client: httpx.Client | None = None) -> dict[str, int]:
    """One pass over the due deliveries. Returns counts of delivered, retrying and failed ones."""
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    hold = timedelta(seconds=settings.webhook_timeout_seconds + 30)
    own_client = client is None
    http = client or httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)
    try:
        with Session(get_engine(settings), expire_on_commit=False) as s:
            due = s.exec(select(WebhookDelivery).where(
                WebhookDelivery.status == "pending", col(WebhookDelivery.next_attempt_at) <= utcnow(),
            ).order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id)).limit(BATCH)).all()
            for d in due:
                if not _claim(s, d, hold):
                    continue
                hook = s.get(Webhook, d.webhook_id)
                attempt_no = d.attempts + 1
                at = utcnow()
                code: int | None = None
                error: str | None = "webhook removed"
                latency: float | None = None
                if hook is not None:
                    headers = signed_headers(secret_store.decrypt(settings, hook.secret_ciphertext), d.msg_id, at,
                                             d.body)
                    t0 = time.perf_counter()
                    code, error = _attempt(http, hook.url, headers, d.body)
                    latency = round((time.perf_counter() - t0) * 1000, 2)
                s.add(WebhookAttempt(delivery_id=d.id or 0, tenant_id=d.tenant_id, attempt=attempt_no, at=at,
                                     status_code=code, latency_ms=latency, error=error))
                values: dict[str, object] = {"attempts": attempt_no, "last_error": error}
                if error is None:
                    values |= {"status": "delivered", "delivered_at": utcnow(), "next_attempt_at": None}
                    counts["delivered"] += 1
                elif hook is None or attempt_no >= settings.webhook_max_attempts:
                    values |= {"status": "failed", "next_attempt_at": None}
                    counts["failed"] += 1
                    log.warning("webhook delivery %s (%s) given up after %d attempts: %s",
                                d.id, d.event_type, attempt_no, error)
                else:
                    wait = backoff_seconds(attempt_no, settings.webhook_backoff_seconds,
                                           settings.webhook_backoff_cap_seconds)
                    values |= {"next_attempt_at": utcnow() + timedelta(seconds=wait)}
                    counts["retrying"] += 1
                s.exec(update(WebhookDelivery).where(col(WebhookDelivery.id) == d.id).values(**values))
                s.commit()
    finally:
        if own_client:
            http.close()
    return counts


class WebhookDispatcher(PeriodicLoop):
    """Runs `deliver_due` every `webhook_poll_seconds` on a thread, beside the reconciler."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # One connection pool for the dispatcher's life, closed when it stops.
        self._client = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)
        super().__init__(
            "webhook-dispatcher",
            settings.webhook_poll_seconds,
            self._pass,
            join_timeout=settings.webhook_timeout_seconds + 5,
            log=log,
        )

    def stop(self) -> None:
        super().stop()
        self._client.close()

    def _pass(self) -> None:
        counts = deliver_due(self.settings, client=self._client)
        if any(counts.values()):
            log.info("webhooks: %s", counts)
