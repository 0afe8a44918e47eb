"""Webhooks: a tenant's members register, list and remove them and read their delivery log.

The signing secret is in the creation answer only (stored encrypted, never listed or logged).
Admins act for any tenant and name it with `tenant_id`; tenant members always act for their own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlmodel import col, select

from provisioner.api.bounds import IdFilter, PathId
from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.pagination import Paging, page_meta
from provisioner.api.problems import Problem, not_found
from provisioner.api.schemas import Page
from provisioner.api.webhook_schemas import AttemptOut, DeliveryOut, WebhookCreated, WebhookIn, WebhookOut
from provisioner.services import webhooks
from provisioner.store.config import get_settings
from provisioner.store.models import Tenant
from provisioner.store.notify_models import Webhook, WebhookAttempt, WebhookDelivery

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.post("", status_code=201, response_model=WebhookCreated,
             summary="Register a webhook; the answer carries its signing secret, shown this once")
def create_webhook(body: WebhookIn, p: Annotated[Principal, Depends(require("webhooks:write"))],
                   s: DbSession) -> WebhookCreated:
    if p.scoped:
        if body.tenant_id is not None and body.tenant_id != p.tenant_id:
            raise Problem(403, "webhook.other_tenant", "you can register webhooks for your own tenant only",
                          hint="leave tenant_id out")
        tenant_id = p.tenant_id
    else:
        tenant_id = body.tenant_id
    if tenant_id is None or s.get(Tenant, tenant_id) is None:
        raise Problem(422, "webhook.tenant_required", "a webhook belongs to an existing tenant",
                      hint="admins name it with tenant_id (GET /v1/tenants)")
    hook, secret = webhooks.create(s, get_settings(), tenant_id=tenant_id, url=body.url, events=body.events,
                                   description=body.description, actor_id=p.user_id, actor_name=p.name,
                                   request_id=p.request_id)
    s.commit()
    return WebhookCreated.model_validate(WebhookOut.model_validate(hook).model_dump() | {"secret": secret})


@router.get("", response_model=Page[WebhookOut], summary="List the webhooks you manage")
def list_webhooks(*, tenant_id: IdFilter = None, pg: Paging,
                  p: Annotated[Principal, Depends(require("webhooks:read"))], s: DbSession) -> dict:
    q = select(Webhook)
    scope = p.tenant_scope or tenant_id
    if scope is not None:
        q = q.where(Webhook.tenant_id == scope)
    items = s.exec(q.order_by(col(Webhook.id)).offset(pg.offset).limit(pg.limit)).all()
    return {"items": items, **page_meta(s, q, pg)}


@router.delete("/{webhook_id}", status_code=204,
               summary="Remove a webhook; its pending deliveries end as failed, the log stays")
def delete_webhook(webhook_id: PathId, p: Annotated[Principal, Depends(require("webhooks:write"))],
                   s: DbSession) -> None:
    hook = webhooks.get_visible(s, webhook_id, p.tenant_scope)
    webhooks.remove(s, hook, actor_id=p.user_id, actor_name=p.name, request_id=p.request_id)
    s.commit()


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryOut],
            summary="A webhook's delivery log, newest first: each delivery with every attempt")
def list_deliveries(*, webhook_id: PathId,
                    status: Annotated[str | None, Query(max_length=16, pattern="^(pending|delivered|failed)$")]
                    = None, pg: Paging, p: Annotated[Principal, Depends(require("webhooks:read"))],
                    s: DbSession) -> dict:
    scope = p.tenant_scope
    q = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if scope is not None:
        q = q.where(WebhookDelivery.tenant_id == scope)
    if status is not None:
        q = q.where(WebhookDelivery.status == status)
    rows = s.exec(q.order_by(col(WebhookDelivery.id).desc()).offset(pg.offset).limit(pg.limit)).all()
    if s.get(Webhook, webhook_id) is not None:
        webhooks.get_visible(s, webhook_id, scope)  # 404 for another tenant's webhook
    elif not rows:
        # A removed webhook's log stays readable (rows filtered to the caller's tenant above).
        raise not_found("webhook", webhook_id)
    attempts: dict[int, list[WebhookAttempt]] = {}
    if rows:
        for a in s.exec(select(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_([d.id for d in rows]))
                        .order_by(col(WebhookAttempt.id))).all():
            attempts.setdefault(a.delivery_id, []).append(a)
    items = [DeliveryOut.model_validate(d).model_copy(update={
        "attempt_log": [AttemptOut.model_validate(a) for a in attempts.get(d.id or 0, [])]}) for d in rows]
    return {"items": items, **page_meta(s, q, pg)}
