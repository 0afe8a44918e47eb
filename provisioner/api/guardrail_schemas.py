"""Request and response bodies of the guardrail routes (policy, waivers, quotas, leases)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from provisioner.api.bounds import MAX_POOLS, Instant, QuotaCount
from provisioner.api.schemas import Name, Out, Strict, Timestamp


class PolicyOut(Out):
    version: int = Field(description="0 = never changed: the built-in defaults")
    updated_by: int | None
    updated_by_name: str
    updated_at: Timestamp | None
    policy: dict[str, Any]
    codes: dict[str, dict[str, Any]] = Field(description="every guardrail code: rule, waivable, summary")


# Also leaves NUL out: a field with its own pattern does not get the generic no-NUL one.
NO_EDGE_SPACE = r"^[^\s\x00](?:[^\x00]*[^\s\x00])?$"


class WaiverIn(Strict):
    # Strings are stripped before their length is checked (Strict): the patterns say so in the
    # description, or schema-valid "  ab" would be refused as too short.
    code: str = Field(min_length=1, max_length=64, pattern=NO_EDGE_SPACE,
                      description="the violation code to waive, e.g. backup.required")
    scope: str = Field(min_length=1, max_length=96, pattern=NO_EDGE_SPACE,
                       description="tenant:<name>, host:<id> or request:<id>; admission only honours tenant scopes")
    justification: str = Field(min_length=1, max_length=4000, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$")


class WaiverDecisionIn(Strict):
    expires_at: Instant | None = Field(default=None, description="mandatory; at most policy.waiver_max_days ahead")
    note: str = Field(default="", max_length=2000)


class WaiverNoteIn(Strict):
    note: str = Field(default="", max_length=2000)


class WaiverOut(Out):
    id: int
    code: str
    scope: str
    tenant_id: int | None
    justification: str
    requested_by: int
    status: str
    decided_by: int | None
    decided_at: Timestamp | None
    decision_note: str
    expires_at: Timestamp | None
    created_at: Timestamp
    active: bool = Field(default=False, description="approved and not expired: it counts")


class QuotaIn(Strict):
    quota: dict[Name, QuotaCount] = Field(
        max_length=MAX_POOLS, description="max hosts at once per pool; {} = unlimited, otherwise unlisted pools get 0")


class ExtendIn(Strict):
    hours: int = Field(ge=-1_000_000, le=1_000_000,
                       description="hours added to the current expiry (checked against the lease policy)")


class LeaseOut(Out):
    request_id: int
    lease_expires_at: Timestamp
    extensions_used: int
    max_extensions: int
