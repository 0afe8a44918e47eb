"""Request-scoped dependencies: the DB session, the authenticated principal, permission checks.

These run on the event loop (async) and reach the database through the thread pool only when they
must: every sync dependency costs a thread hop per request, which was a good part of a small
read's cost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from provisioner.api.auth_cache import AuthCache, TokenRecord
from provisioner.api.problems import Problem
from provisioner.core.permissions import Role, allowed, tenant_scoped
from provisioner.core.timeutil import utcnow
from provisioner.core.token_rules import token_usable
from provisioner.store.config import get_settings
from provisioner.store.db import get_engine, get_read_engine
from provisioner.store.models import ApiToken, User
from provisioner.store.secrets import parse_token, secret_matches

READ_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request. GET/HEAD get one in autocommit (no BEGIN/ROLLBACK round trips; reads
    never write); everything else a transaction the handler commits."""
    read_only = request.method in READ_METHODS
    session = Session(get_read_engine() if read_only else get_engine(), expire_on_commit=False)
    try:
        yield session
    finally:
        if read_only or not session.in_transaction():
            # Nothing to roll back (autocommit): returning the connection does no I/O.
            session.close()
        else:
            # Returning the connection rolls back on the database: not on the event loop.
            await run_in_threadpool(session.close)


# The request's database session, as a parameter type: `s: DbSession`.
DbSession = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Principal:
    user_id: int
    name: str
    role: Role
    tenant_id: int | None
    request_id: str | None

    @property
    def scoped(self) -> bool:
        return tenant_scoped(self.role)

    @property
    def tenant_scope(self) -> int | None:
        """The one tenant a scoped caller's reads are narrowed to; None: every tenant."""
        return self.tenant_id if self.scoped else None

    def sees_tenant(self, tenant_id: int | None) -> bool:
        return not self.scoped or (tenant_id is not None and tenant_id == self.tenant_id)


AUTH_HINT = "send 'Authorization: Bearer prov_...'; an admin creates tokens with `provisioner tokens create`"


def auth_cache(app: FastAPI) -> AuthCache:
    cache = getattr(app.state, "auth_cache", None)
    if cache is None:
        cache = app.state.auth_cache = AuthCache(get_settings().auth_cache_seconds)
    return cache


def load_token(token_id: str) -> TokenRecord | None:
    with Session(get_read_engine()) as session:
        # One round trip: the token and its user together.
        found = session.exec(
            select(ApiToken, User).join(User, col(User.id) == ApiToken.user_id).where(ApiToken.token_id == token_id)
        ).first()
        if found is None:
            return None
        tok, user = found
        return TokenRecord(tok.secret_hash, tok.revoked, tok.expires_at, user.id or 0, user.name, user.role,
                           user.tenant_id, user.active)


# Declares the bearer scheme in the OpenAPI description (FastAPI marks every operation that
# depends on it); the header itself is parsed below, so a missing one is our 401, not FastAPI's.
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer prov_...")


async def authenticate(request: Request,
                       _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "auth.required", "this endpoint needs an API token", hint=AUTH_HINT)
    return await principal_for_token(request, token)


async def principal_for_token(request: Request, token: str) -> Principal:
    """The principal a raw API token stands for (header or dashboard cookie), or a 401 Problem."""
    parsed = parse_token(token.strip())
    if parsed is None:
        raise Problem(401, "auth.invalid_token", "the API token is malformed", hint=AUTH_HINT)
    token_id, secret = parsed
    cache = auth_cache(request.app)
    rec = cache.get(token_id)
    if rec is None:
        rec = await run_in_threadpool(load_token, token_id)
        if rec is not None:
            cache.put(token_id, rec)
    if rec is None or not secret_matches(secret, rec.secret_hash):
        raise Problem(401, "auth.invalid_token", "the API token is not valid", hint=AUTH_HINT)
    if not token_usable(rec.revoked, rec.expires_at, utcnow()):
        raise Problem(401, "auth.token_expired", "the API token was revoked or has expired",
                      hint="ask an admin for a new token")
    if not rec.user_active:
        raise Problem(401, "auth.user_inactive", "the token's user is deactivated", hint="ask an admin")
    return Principal(rec.user_id, rec.user_name, Role(rec.role), rec.tenant_id,
                     getattr(request.state, "request_id", None))


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    async def _dep(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not allowed(principal.role, permission):
            raise Problem(403, "auth.forbidden",
                          f"role {principal.role} may not do {permission}",
                          hint="ask an admin for a role that grants it", permission=permission)
        return principal

    _dep.__name__ = f"require_{permission.replace(':', '_')}"
    return _dep
