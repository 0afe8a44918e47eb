"""Tables of the customers' side channels: webhooks with their outbox and delivery log, and the
ratings a customer gives a delivered request (a low one is an escalation until answered).

A delivery row is the outbox: it is written in the transaction of the event that causes it and
carries the exact body that will be signed and sent, so a retry sends the same bytes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

from provisioner.core.timeutil import utcnow


class Webhook(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    url: str = Field(max_length=2048)
    # The signing secret, encrypted like host credentials (store/secrets.py); shown once at creation.
    secret_ciphertext: str = Field(sa_column=Column(Text, nullable=False))
    events: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str = Field(default="", max_length=256)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    __table_args__ = (Index("ix_webhookdelivery_status_next", "status", "next_attempt_at"),)
    id: int | None = Field(default=None, primary_key=True)
    # Not a foreign key: the delivery log outlives a removed webhook (the tenant can still read it).
    webhook_id: int = Field(index=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    # The Standard Webhooks `webhook-id`: the same on every attempt, so receivers can deduplicate.
    msg_id: str = Field(max_length=64, unique=True)
    event_type: str = Field(max_length=64)
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="pending", index=True, max_length=16)  # pending | delivered | failed
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class WebhookAttempt(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="webhookdelivery.id", index=True)
    tenant_id: int = Field(index=True)
    attempt: int
    at: datetime = Field(default_factory=utcnow)
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Rating(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="hostrequest.id", unique=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    user_id: int = Field(foreign_key="user.id")
    score: int
    comment: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(default_factory=utcnow)
    # A low score opens an escalation: "open" until an operator answers it, then "answered".
    escalation: str | None = Field(default=None, index=True, max_length=16)
    answer: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    answered_by: str | None = Field(default=None, max_length=64)
    answered_at: datetime | None = None
