"""Dashboard sessions: a browser signed in with an API token holds a random session id in its
cookie; the database keeps only the id's hash, whose token it stands for, and when it ends.

The token itself never goes back to the browser. A session is valid while it is neither revoked
(sign-out), nor past its absolute expiry, nor idle too long, and while its API token is valid:
revoking the token ends every session signed in with it."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from provisioner.core.timeutil import utcnow


class DashboardSession(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    # SHA-256 (hex) of the random session id; the id itself is only in the browser's cookie.
    session_hash: str = Field(max_length=64, unique=True, index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    # The API token signed in with (its public id): its revocation or expiry ends the session.
    token_id: str = Field(foreign_key="apitoken.token_id", index=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked: bool = False
