"""Dashboard sessions: opened by signing in with an API token, closed by signing out, ended by their
expiry, by idleness, or by the revocation or expiry of the token (or the deactivation of the user).

The browser holds a random session id (256 bits); the database holds its SHA-256, so a copy of the
table signs nobody in. The CSRF token of a session's forms is an HMAC of its id: bound to the session,
unknown to other sites (the id is in an HttpOnly cookie), and checked on every state-changing form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from provisioner.core.timeutil import as_utc, iso
from provisioner.core.token_rules import token_usable
from provisioner.services import audit
from provisioner.services.actor import Actor
from provisioner.store.models import ApiToken, User
from provisioner.store.session_models import DashboardSession

# A session ends this long after sign-in whatever happens, or after this long without a page view.
SESSION_LIFETIME = timedelta(hours=12)
IDLE_TIMEOUT = timedelta(hours=2)
# last_seen_at is written at most this often (not on every page view).
TOUCH_EVERY = timedelta(seconds=60)
# Session ids are 43 characters (token_urlsafe(32)); anything much longer is not one of ours.
MAX_ID_LENGTH = 128
_CSRF_CONTEXT = b"provisioner dashboard form"


@dataclass(frozen=True)
class SignedIn:
    """Who a valid session stands for."""

    session_row: int
    user_id: int
    user_name: str
    role: str
    tenant_id: int | None
    token_id: str
    touch: bool  # last_seen_at is older than TOUCH_EVERY: the caller should call touch()


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    return hmac.new(session_id.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def csrf_matches(session_id: str, given: str) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(session_id), given)


def open_session(s: Session, *, token_id: str, actor: Actor, now: datetime) -> str:
    """A new session for the principal an API token stands for (added and audited, not committed);
    returns the random session id, which only the browser keeps."""
    session_id = secrets.token_urlsafe(32)
    row = DashboardSession(session_hash=session_hash(session_id), user_id=actor.user_id or 0, token_id=token_id,
                           created_at=now, last_seen_at=now, expires_at=now + SESSION_LIFETIME)
    s.add(row)
    s.flush()
    audit.record(s, actor_id=actor.user_id, actor_name=actor.name, action="session.create", object_type="session",
                 object_id=row.id, tenant_id=actor.tenant_id,
                 after={"token_id": token_id, "expires_at": iso(row.expires_at)}, request_id=actor.request_id)
    return session_id


def find_session(s: Session, session_id: str, now: datetime) -> SignedIn | None:
    """The valid session with this id (one query: session, token and user), or None."""
    if not session_id or len(session_id) > MAX_ID_LENGTH:
        return None
    found = s.exec(select(DashboardSession, ApiToken, User)
                   .join(ApiToken, col(ApiToken.token_id) == DashboardSession.token_id)
                   .join(User, col(User.id) == DashboardSession.user_id)
                   .where(DashboardSession.session_hash == session_hash(session_id))).first()
    if found is None:
        return None
    row, tok, user = found
    last_seen = as_utc(row.last_seen_at)
    if (row.revoked or as_utc(row.expires_at) <= now or last_seen + IDLE_TIMEOUT <= now
            or not token_usable(tok.revoked, tok.expires_at, now)
            or not user.active or tok.user_id != user.id):
        return None
    return SignedIn(row.id or 0, user.id or 0, user.name, user.role, user.tenant_id, tok.token_id,
                    touch=now - last_seen >= TOUCH_EVERY)


def touch(s: Session, session_row: int, now: datetime) -> None:
    s.exec(update(DashboardSession).where(col(DashboardSession.id) == session_row)
           .values(last_seen_at=now))


def close_session(s: Session, session_id: str, *, actor: Actor) -> bool:
    """Sign-out: the session is revoked (and audited; not committed). False when it was not open."""
    row = s.exec(select(DashboardSession).where(DashboardSession.session_hash == session_hash(session_id),
                                                col(DashboardSession.revoked).is_(False))).first()
    if row is None:
        return False
    row.revoked = True
    s.add(row)
    audit.record(s, actor_id=actor.user_id, actor_name=actor.name, action="session.revoke", object_type="session",
                 object_id=row.id, tenant_id=actor.tenant_id, before={"revoked": False}, after={"revoked": True},
                 request_id=actor.request_id)
    return True
