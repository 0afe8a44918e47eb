"""Tenants, users and API tokens (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from provisioner.api.bounds import PathId
from provisioner.api.deps import DbSession, Principal, auth_cache, require
from provisioner.api.pagination import Paging, page_meta
from provisioner.api.problems import Problem, not_found
from provisioner.api.schemas import Page, TenantIn, TenantOut, TokenIn, TokenOut, UserIn, UserOut
from provisioner.core.permissions import tenant_scoped
from provisioner.services import audit
from provisioner.services.tokens import issue_token
from provisioner.store.models import ApiToken, Tenant, User

router = APIRouter(prefix="/v1", tags=["admin"])


def _conflict(kind: str, name: str) -> Problem:
    return Problem(409, f"{kind}.exists", f"a {kind} named {name!r} already exists", hint="choose another name")


@router.post("/tenants", status_code=201, response_model=TenantOut, summary="Create a tenant")
def create_tenant(body: TenantIn, p: Annotated[Principal, Depends(require("tenants:write"))],
                  s: DbSession) -> Tenant:
    t = Tenant(name=body.name, quota=dict(body.quota))
    s.add(t)
    try:
        s.flush()
    except IntegrityError:
        s.rollback()
        raise _conflict("tenant", body.name) from None
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="tenant.create", object_type="tenant",
                 object_id=t.id, tenant_id=t.id, after=body.model_dump(), request_id=p.request_id)
    s.commit()
    return t


@router.get("/tenants", response_model=Page[TenantOut], summary="List tenants")
def list_tenants(pg: Paging, _: Annotated[Principal, Depends(require("tenants:read"))],
                 s: DbSession) -> dict:
    q = select(Tenant)
    items = s.exec(q.order_by(col(Tenant.id)).offset(pg.offset).limit(pg.limit)).all()
    return {"items": items, **page_meta(s, q, pg)}


@router.post("/users", status_code=201, response_model=UserOut, summary="Create a user")
def create_user(body: UserIn, p: Annotated[Principal, Depends(require("users:write"))],
                s: DbSession) -> User:
    if tenant_scoped(body.role) and body.tenant_id is None:
        raise Problem(422, "user.tenant_required", f"a {body.role} must belong to a tenant",
                      hint="pass tenant_id (GET /v1/tenants lists them)")
    if body.tenant_id is not None and s.get(Tenant, body.tenant_id) is None:
        raise Problem(422, "user.unknown_tenant", f"tenant {body.tenant_id} does not exist",
                      hint="create it first with POST /v1/tenants")
    u = User(name=body.name, role=body.role, tenant_id=body.tenant_id)
    s.add(u)
    try:
        s.flush()
    except IntegrityError:
        s.rollback()
        raise _conflict("user", body.name) from None
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="user.create", object_type="user",
                 object_id=u.id, tenant_id=u.tenant_id, after=body.model_dump(mode="json"),
                 request_id=p.request_id)
    s.commit()
    return u


@router.get("/users", response_model=Page[UserOut], summary="List users")
def list_users(pg: Paging, _: Annotated[Principal, Depends(require("users:read"))],
               s: DbSession) -> dict:
    q = select(User)
    items = s.exec(q.order_by(col(User.id)).offset(pg.offset).limit(pg.limit)).all()
    return {"items": items, **page_meta(s, q, pg)}


@router.post("/users/{user_id}/tokens", status_code=201, response_model=TokenOut,
             summary="Create an API token for a user (shown once)")
def create_token(user_id: PathId, body: TokenIn, p: Annotated[Principal, Depends(require("tokens:write"))],
                 s: DbSession) -> TokenOut:
    user = s.get(User, user_id)
    if user is None:
        raise not_found("user", user_id)
    tok, full = issue_token(s, user, body.name, body.expires_in_days)
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="token.create", object_type="token",
                 object_id=tok.token_id, tenant_id=user.tenant_id,
                 after={"user_id": user.id, "name": body.name, "expires_at": str(tok.expires_at)},
                 request_id=p.request_id)
    s.commit()
    out = TokenOut.model_validate(tok)
    out.token = full
    return out


@router.delete("/tokens/{token_id}", status_code=204,
               summary="Revoke an API token (at once on this API process, within PROVISIONER_AUTH_CACHE_SECONDS "
                       "on the others); the dashboard sessions signed in with it end at once",
               description="Each dashboard page view checks its session's token in the database, so a "
                           "browser signed in with the token is sent to the sign-in page on its next view.")
def revoke_token(token_id: Annotated[str, Path(max_length=64)], request: Request,
                 p: Annotated[Principal, Depends(require("tokens:write"))], s: DbSession) -> None:
    tok = s.exec(select(ApiToken).where(ApiToken.token_id == token_id)).first()
    if tok is None:
        raise not_found("token", token_id)
    tok.revoked = True
    s.add(tok)
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="token.revoke", object_type="token",
                 object_id=token_id, before={"revoked": False}, after={"revoked": True}, request_id=p.request_id)
    s.commit()
    auth_cache(request.app).forget(token_id)
