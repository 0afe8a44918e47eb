"""Bodies of the webhook routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from provisioner.api.schemas import Out, Strict, Timestamp
from provisioner.core.webhook_rules import EVENT_TYPES, MAX_URL_LENGTH
from provisioner.store.column_ranges import INT_COLUMN_MAX


class WebhookIn(Strict):
    # Printable ASCII without spaces (a URL's characters; IRIs are percent-encoded or punycode): strings
    # are stripped before they are checked (Strict), so a schema that let "\n" through would describe a
    # body the service then refuses, and `\s` means other characters in JSON Schema than in Python.
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH, pattern=r"^[!-~]+$",
                     description="https:// anywhere, or http:// to a loopback address (127.0.0.1, ::1, localhost)")
    events: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=len(EVENT_TYPES),
                              description="event types: " + ", ".join(EVENT_TYPES))
    description: str = Field(default="", max_length=256)
    tenant_id: int | None = Field(default=None, ge=1, le=INT_COLUMN_MAX,
                                  description="admins only: the tenant it belongs to")


class WebhookOut(Out):
    id: int
    tenant_id: int
    url: str
    events: list[str]
    description: str
    created_by: str
    created_at: Timestamp


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret (Standard Webhooks, whsec_...): shown once, keep it")


class AttemptOut(Out):
    attempt: int
    at: Timestamp
    status_code: int | None
    latency_ms: float | None
    error: str | None


class DeliveryOut(Out):
    id: int
    webhook_id: int
    msg_id: str
    event_type: str
    body: str
    status: str
    attempts: int
    next_attempt_at: Timestamp | None
    created_at: Timestamp
    delivered_at: Timestamp | None
    last_error: str | None
    attempt_log: list[AttemptOut] = Field(default_factory=list)
