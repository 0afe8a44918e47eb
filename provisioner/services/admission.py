"""Admission: the guardrails applied to a host request before anything is allocated.

`admit()` is called by POST /v1/requests inside its transaction, before allocation. It takes the
request as `guardrails.RequestSpec` (the API maps its body to it), runs `check_request` and `check_quota` against the
current policy, drops violations covered by approved, unexpired waivers, and refuses the request
with ONE 422 problem listing every remaining violation. Nothing is written when it refuses.

Decisions
---------
* Image channel: judged from the catalogue record (`imaging.catalogue.catalogue_image_ref`), never
  from the name. A name outside the catalogue never gets here: `imaging.catalogue.check_requestable`
  refuses it first (`image.unknown`). A request without an image has no image rule to break.
* Disk count (`data_disks`) is unknown at admission (hosts are chosen afterwards), so the
  disk-count rules are skipped here; the raid phase and continuous compliance catch them.
* Waivers: only tenant-scoped waivers ("tenant:<name>") can apply at admission. A request-scoped
  waiver can't exist before the request has an id, and a refused request leaves no row to re-submit,
  so a customer who needs an exception asks for a tenant-scoped waiver (POST /v1/waivers with
  scope "tenant:<their tenant>"), has it approved, then submits the request again. Host- and
  request-scoped waivers are for continuous compliance of running hosts.
* Quota: `Tenant.quota` is {pool: max hosts}. An EMPTY quota means unlimited (so tenants created
  without one keep working); once any pool is listed, an unlisted pool has quota 0
  (`guardrails.check_quota`). Hosts in use = the tenant's hosts in the pool in state provisioning,
  active, releasing or failed (a failed host may still hold the tenant's data until released).
* Quota violations are reported in the same 422 as policy violations, not as a separate 409, so the
  user sees every problem of the request in one answer. They are never waivable: the remedy is a
  quota increase (PUT /v1/tenants/{id}/quota, admin).
* On PostgreSQL the tenant row is locked (FOR UPDATE) while a quota is checked, so two concurrent
  requests of one tenant can't both squeeze under the quota; the lock lasts until the request's
  transaction ends.
* Requests that pass only thanks to waivers get a "guardrails.waived" audit entry in the same
  transaction (so it exists only if the request is created).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from provisioner.core import guardrails
from provisioner.core.errors import Invalid, Unavailable
from provisioner.services import audit
from provisioner.services.actor import Actor
from provisioner.store.guardrail_models import POLICY_DOC_ID, PolicyDoc, Waiver
from provisioner.store.models import Host, Tenant

log = logging.getLogger("provisioner.admission")


class GuardrailViolations(Invalid):
    """The request breaks the policy: every violation is listed with its remedy."""


class PolicyCorrupt(Unavailable):
    """The stored policy does not validate: requests are refused until an operator fixes it."""

# Host states that occupy a slot of the tenant's quota.
QUOTA_STATES = ("provisioning", "active", "releasing", "failed")


def load_policy_doc(session: Session) -> PolicyDoc | None:
    return session.get(PolicyDoc, POLICY_DOC_ID)


def policy_from_doc(doc: PolicyDoc | None) -> guardrails.Policy:
    """The stored policy, or the defaults. Fields this code no longer knows are ignored (a stored
    document must not brick admission after an upgrade); an invalid document fails closed."""
    if doc is None:
        return guardrails.Policy()
    known = {k: v for k, v in (doc.policy or {}).items() if k in guardrails.Policy.model_fields}
    dropped = sorted(set(doc.policy or {}) - set(known))
    if dropped:
        log.warning("stored policy v%s has unknown fields %s; ignoring them", doc.version, dropped)
    try:
        return guardrails.Policy.from_dict(known)
    except guardrails.PolicyError as exc:
        raise PolicyCorrupt("policy.corrupt", f"the stored policy (version {doc.version}) is invalid: {exc}",
                      hint="an operator must fix it with PUT /v1/policy; requests are refused meanwhile",
                      errors=list(exc.errors)) from None


def load_policy(session: Session) -> guardrails.Policy:
    return policy_from_doc(load_policy_doc(session))


def hosts_in_use(session: Session, tenant_id: int, pool: str) -> int:
    return session.exec(
        select(func.count()).select_from(Host).where(
            Host.tenant_id == tenant_id, Host.pool == pool,
            col(Host.state).in_(QUOTA_STATES))
    ).one()


def active_waivers(session: Session, scopes: list[str]) -> list[guardrails.Waiver]:
    """Approved waivers for the scopes, as guardrails values; expiry is judged by apply_waivers."""
    rows = session.exec(select(Waiver).where(Waiver.status == "approved",
                                             col(Waiver.scope).in_(scopes))).all()
    return [guardrails.Waiver(code=w.code, scope=w.scope, approved=True, expires_at=w.expires_at,
                              justification=w.justification, requested_by=str(w.requested_by),
                              approved_by=None if w.decided_by is None else str(w.decided_by))
            for w in rows if w.expires_at is not None]


def violations_problem(violations: list[guardrails.Violation], *, what: str, waived: list[str] | None = None,
                       ) -> GuardrailViolations:
    codes = [v.code for v in violations]
    summary = "; ".join(v.message for v in violations)
    waivable = sorted({v.code for v in violations if v.waivable})
    hint = "fix every listed violation (each has a remedy) and submit again"
    if waivable:
        hint += ("; if one can't be fixed now, ask for a tenant-scoped waiver of " + ", ".join(waivable)
                 + " with POST /v1/waivers")
    extra: dict[str, Any] = {"violations": [v.to_dict() for v in violations], "codes": codes}
    if waived:
        extra["waived"] = waived
    return GuardrailViolations("guardrails.violations",
                   f"{what} violates {len(violations)} guardrail(s): {summary}", hint=hint, **extra)


def admit(session: Session, principal: Actor, spec: guardrails.RequestSpec, now: datetime) -> guardrails.Policy:
    """Raise GuardrailViolations listing every violation, or return the policy the request passed.

    `spec` is the request as the guardrails see it (its tenant and role are the principal's).
    """
    tenant = session.get(Tenant, principal.tenant_id) if principal.tenant_id is not None else None
    tenant_name = tenant.name if tenant is not None else ""
    policy = load_policy(session)
    violations = guardrails.check_request(spec, policy)

    if tenant is not None and tenant.quota:
        # Re-read under a row lock (PostgreSQL) so concurrent requests of the tenant queue here.
        tenant = session.exec(select(Tenant).where(Tenant.id == tenant.id).with_for_update()
                              .execution_options(populate_existing=True)).one()
        quota = {str(k): int(v) for k, v in (tenant.quota or {}).items()}
        if quota:
            in_use = hosts_in_use(session, tenant.id or 0, spec.pool)
            violations += guardrails.check_quota(quota, {spec.pool: in_use}, spec.pool, spec.count,
                                                 tenant=tenant_name)

    waived: list[guardrails.Violation] = []
    if violations and tenant_name:
        scopes = [guardrails.scope("tenant", tenant_name)]
        violations, waived = guardrails.apply_waivers(violations, active_waivers(session, scopes), now, scopes)
    if violations:
        raise violations_problem(violations, what="the request",
                                 waived=[v.code for v in waived])
    if waived:
        audit.record(session, actor_id=principal.user_id, actor_name=principal.name, action="guardrails.waived",
                     object_type="tenant", object_id=principal.tenant_id, tenant_id=principal.tenant_id,
                     after={"codes": [v.code for v in waived], "scope": f"tenant:{tenant_name}",
                            "image": spec.image.name if spec.image else None, "pool": spec.pool, "count": spec.count},
                     request_id=principal.request_id)
    return policy
