"""The guardrail policy: read it (everyone), change it (operators and admins, audited).

PUT /v1/policy MERGES: the body may be partial; fields it names replace the current values,
fields it omits keep their current values (not the built-in defaults). The merged document is
validated as a whole by `guardrails.Policy.from_dict`, and every bad field is reported at once.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.guardrail_schemas import PolicyOut
from provisioner.api.problems import Problem
from provisioner.core import guardrails
from provisioner.core.timeutil import utcnow
from provisioner.services import audit
from provisioner.services.admission import policy_from_doc
from provisioner.store.guardrail_models import POLICY_DOC_ID, PolicyDoc

router = APIRouter(prefix="/v1/policy", tags=["guardrails"])


def codes_table() -> dict[str, dict[str, Any]]:
    return {code: {"rule": info.rule, "waivable": info.waivable, "summary": info.summary}
            for code, info in sorted(guardrails.CODES.items())}


def policy_out(doc: PolicyDoc | None) -> PolicyOut:
    policy = policy_from_doc(doc)
    return PolicyOut(version=doc.version if doc else 0, updated_by=doc.updated_by if doc else None,
                     updated_by_name=doc.updated_by_name if doc else "", updated_at=doc.updated_at if doc else None,
                     policy=policy.to_dict(), codes=codes_table())


def _error_items(errors: tuple[str, ...]) -> list[dict[str, str]]:
    items = []
    for e in errors:
        name, sep, problem = e.partition(": ")
        items.append({"field": name, "message": problem} if sep else {"field": "policy", "message": e})
    return items


@router.get("", response_model=PolicyOut, summary="The current guardrail policy and every guardrail code")
def get_policy(_: Annotated[Principal, Depends(require("policy:read"))], s: DbSession) -> PolicyOut:
    return policy_out(s.get(PolicyDoc, POLICY_DOC_ID))


# The body is a partial policy (merged into the current one), validated by the core's own model; its
# JSON schema (no field required, no other field allowed) is what the description shows.
POLICY_FIELDS_SCHEMA = {k: v for k, v in guardrails.Policy.model_json_schema().items()
                        if k not in ("title", "description")}


@router.put("", response_model=PolicyOut,
            summary="Change the policy: the fields given replace the current ones, the rest stay as they are")
def put_policy(body: Annotated[dict[str, Any], Body(
                   description="policy fields, as returned in GET's `policy`", json_schema_extra=POLICY_FIELDS_SCHEMA)],
               p: Annotated[Principal, Depends(require("policy:write"))], s: DbSession) -> PolicyOut:
    doc = s.exec(select(PolicyDoc).where(PolicyDoc.id == POLICY_DOC_ID).with_for_update()).first()
    current = policy_from_doc(doc)
    before = current.to_dict()
    try:
        # Unknown fields are passed through so from_dict reports them with the other errors.
        new = guardrails.Policy.from_dict(before | body)
    except guardrails.PolicyError as exc:
        errors = _error_items(exc.errors)
        raise Problem(422, "policy.invalid",
                      f"the policy has {len(errors)} problem(s): " + "; ".join(exc.errors),
                      hint="fix every listed field; GET /v1/policy shows the current values and their types",
                      errors=errors) from None
    after = new.to_dict()
    changed = sorted(k for k in after if after[k] != before.get(k))
    if not changed:
        return policy_out(doc)  # nothing to do: no new version, no audit noise
    if doc is None:
        doc = PolicyDoc(id=POLICY_DOC_ID, version=0)
    doc.policy = after
    doc.version += 1
    doc.updated_by = p.user_id
    doc.updated_by_name = p.name
    doc.updated_at = utcnow()
    s.add(doc)
    try:
        s.flush()
    except IntegrityError:  # two first-ever PUTs raced to create the row
        s.rollback()
        raise Problem(409, "policy.changed", "the policy was changed concurrently",
                      hint="GET /v1/policy and retry") from None
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="policy.update", object_type="policy",
                 object_id=doc.version, before=before | {"version": doc.version - 1},
                 after=after | {"version": doc.version, "changed": changed},
                 request_id=p.request_id)
    s.commit()
    return policy_out(doc)
