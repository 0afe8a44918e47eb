"""Webhooks: a tenant's registrations and the outbox.

`emit` is called inside the transaction of the event it announces (a job settled, a lease warned
or expired, a host drifting out of compliance, an image promoted or deprecated) and writes one
delivery row per subscribed webhook: the event and its announcement commit or roll back together.
`workers/webhook_dispatch.py` sends the rows.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from sqlmodel import Session, col, select

from provisioner.core.errors import Invalid, not_found
from provisioner.core.timeutil import iso, utcnow
from provisioner.core.webhook_rules import EVENT_TYPES, unknown_events, url_problem
from provisioner.services import audit
from provisioner.store import secrets as secret_store
from provisioner.store.config import Settings
from provisioner.store.notify_models import Webhook, WebhookDelivery

SECRET_PREFIX = "whsec_"
HINT_EVENTS = "subscribe to one or more of: " + ", ".join(EVENT_TYPES)


def new_secret() -> str:
    # Standard Webhooks secrets: "whsec_" + base64 of the key bytes (24 bytes = 192 bits).
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def create(session: Session, settings: Settings, *, tenant_id: int, url: str, events: list[str],
           description: str, actor_id: int | None, actor_name: str, request_id: str | None) -> tuple[Webhook, str]:
    """Register a webhook; returns it and its signing secret (shown to the caller once, stored encrypted)."""
    why = url_problem(url)
    if why:
        raise Invalid("webhook.url_invalid", f"webhook URL refused: {why}",
                      hint="use an https:// URL, or http://127.0.0.1:PORT/... for a receiver on this machine")
    unknown = unknown_events(events)
    if not events or unknown:
        raise Invalid("webhook.events_invalid",
                      f"unknown event types: {', '.join(unknown)}" if unknown else "no event types given",
                      hint=HINT_EVENTS, unknown=unknown)
    secret = new_secret()
    hook = Webhook(tenant_id=tenant_id, url=url, secret_ciphertext=secret_store.encrypt(settings, secret),
                   events=sorted(set(events)), description=description, created_by=actor_name)
    session.add(hook)
    session.flush()
    audit.record(session, actor_id=actor_id, actor_name=actor_name, action="webhook.create", object_type="webhook",
                 object_id=hook.id, tenant_id=tenant_id,
                 after={"url": url, "events": hook.events}, request_id=request_id)
    return hook, secret


def get_visible(session: Session, webhook_id: int, tenant_id: int | None) -> Webhook:
    """The webhook, if the caller's tenant scope (None: every tenant) covers it."""
    hook = session.get(Webhook, webhook_id)
    if hook is None or (tenant_id is not None and hook.tenant_id != tenant_id):
        raise not_found("webhook", webhook_id)
    return hook


def remove(session: Session, hook: Webhook, *, actor_id: int | None, actor_name: str,
           request_id: str | None) -> None:
    """Delete the registration; its pending deliveries end as failed, the log stays readable."""
    pending = session.exec(select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id,
                                                         WebhookDelivery.status == "pending")).all()
    for d in pending:
        d.status, d.next_attempt_at, d.last_error = "failed", None, "webhook removed"
        session.add(d)
    audit.record(session, actor_id=actor_id, actor_name=actor_name, action="webhook.delete", object_type="webhook",
                 object_id=hook.id, tenant_id=hook.tenant_id, before={"url": hook.url, "events": hook.events},
                 after={"pending_dropped": len(pending)}, request_id=request_id)
    session.delete(hook)


def emit(session: Session, event_type: str, data: dict[str, Any], *, tenant_id: int | None) -> int:
    """Queue `event_type` for every webhook subscribed to it: the tenant's, or every tenant's when
    `tenant_id` is None (catalogue events). The caller commits. Returns the number of rows written."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type}")
    q = select(Webhook)
    if tenant_id is not None:
        q = q.where(Webhook.tenant_id == tenant_id)
    hooks = [h for h in session.exec(q.order_by(col(Webhook.id))).all() if event_type in (h.events or [])]
    now = utcnow()
    for hook in hooks:
        msg_id = "msg_" + secrets.token_hex(12)
        # Standard Webhooks payload shape: type, timestamp, data. Serialised once: every retry sends
        # (and signs) these exact bytes.
        body = json.dumps({"type": event_type, "timestamp": iso(now), "data": data}, separators=(",", ":"),
                          sort_keys=True)
        session.add(WebhookDelivery(webhook_id=hook.id or 0, tenant_id=hook.tenant_id, msg_id=msg_id,
                                    event_type=event_type, body=body, next_attempt_at=now, created_at=now))
    return len(hooks)
