"""API tokens: issued here, shown once, stored as a hash."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from provisioner.core.timeutil import utcnow
from provisioner.store.models import ApiToken, User
from provisioner.store.secrets import new_token


def issue_token(s: Session, user: User, name: str, expires_in_days: int | None) -> tuple[ApiToken, str]:
    """A new token row for `user` (flushed, not committed) and the full token, which is never stored."""
    full, token_id, digest = new_token()
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    tok = ApiToken(token_id=token_id, secret_hash=digest, user_id=user.id or 0, name=name, expires_at=expires)
    s.add(tok)
    s.flush()
    return tok, full
