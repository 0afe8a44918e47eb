"""Request-scoped dependencies: the DB session, the authenticated principal, permission checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi import Depends, Request
from sqlmodel import Session, select

from provisioner.db import get_engine
from provisioner.models import ApiToken, User
from provisioner.permissions import Role, allowed, tenant_scoped
from provisioner.problems import Problem
from provisioner.secrets import parse_token, secret_matches
from provisioner.timeutil import utcnow


def get_session() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


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

    def sees_tenant(self, tenant_id: int | None) -> bool:
        return not self.scoped or (tenant_id is not None and tenant_id == self.tenant_id)


AUTH_HINT = "send 'Authorization: Bearer prov_...'; an admin creates tokens with `provisioner tokens create`"


def authenticate(request: Request, session: Session = Depends(get_session)) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "auth.required", "this endpoint needs an API token", hint=AUTH_HINT)
    parsed = parse_token(token.strip())
    if parsed is None:
        raise Problem(401, "auth.invalid_token", "the API token is malformed", hint=AUTH_HINT)
    token_id, secret = parsed
    # One round trip: the token and its user together.
    found = session.exec(
        select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(ApiToken.token_id == token_id)
    ).first()
    if found is None or not secret_matches(secret, found[0].secret_hash):
        raise Problem(401, "auth.invalid_token", "the API token is not valid", hint=AUTH_HINT)
    row, user = found
    if row.revoked or (row.expires_at is not None and row.expires_at <= utcnow()):
        raise Problem(401, "auth.token_expired", "the API token was revoked or has expired",
                      hint="ask an admin for a new token")
    if not user.active:
        raise Problem(401, "auth.user_inactive", "the token's user is deactivated", hint="ask an admin")
    return Principal(user.id or 0, user.name, Role(user.role), user.tenant_id,
                     getattr(request.state, "request_id", None))


def require(permission: str) -> Callable[..., Principal]:
    def _dep(principal: Principal = Depends(authenticate)) -> Principal:
        if not allowed(principal.role, permission):
            raise Problem(403, "auth.forbidden",
                          f"role {principal.role} may not do {permission}",
                          hint="ask an admin for a role that grants it", permission=permission)
        return principal

    _dep.__name__ = f"require_{permission.replace(':', '_')}"
    return _dep
