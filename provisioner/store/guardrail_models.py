"""Tables for the guardrails: the current policy document and waivers.

* `PolicyDoc` holds ONE row (id 1): the current policy as JSON (`guardrails.Policy.to_dict()`), a
  version that every change increments, and who changed it when. No row = `guardrails.Policy()`
  defaults at version 0 (see `provisioner.services.admission.load_policy`).
* `Waiver`: an exception to one guardrail code for one scope ("request:<id>", "host:<id>",
  "tenant:<name>"). Lifecycle: requested -> approved | rejected; approved -> revoked. An approved
  waiver counts only until `expires_at` (mandatory at approval, at most `policy.waiver_max_days`
  ahead); an expired one keeps status "approved" but no longer applies (`WaiverOut.active`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from provisioner.core.timeutil import utcnow

POLICY_DOC_ID = 1
WAIVER_STATUSES = ("requested", "approved", "rejected", "revoked")


class PolicyDoc(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    policy: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    version: int = 0
    updated_by: int | None = Field(default=None, foreign_key="user.id")
    updated_by_name: str = Field(default="", max_length=64)
    updated_at: datetime = Field(default_factory=utcnow)


class Waiver(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(index=True, max_length=64)
    scope: str = Field(index=True, max_length=96)
    # Owner of the scope (tenant of the request/host, or the tenant itself): drives visibility.
    tenant_id: int | None = Field(default=None, foreign_key="tenant.id", index=True)
    justification: str = Field(sa_column=Column(Text, nullable=False))
    requested_by: int = Field(foreign_key="user.id")
    status: str = Field(default="requested", index=True, max_length=16)
    decided_by: int | None = Field(default=None, foreign_key="user.id")
    decided_at: datetime | None = None
    decision_note: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
