"""When an API token still stands for its user: the one rule the API's bearer check and the
dashboard's sessions (which ride on a token) both apply."""

from __future__ import annotations

from datetime import datetime

from provisioner.core.timeutil import as_utc


def token_usable(revoked: bool, expires_at: datetime | None, now: datetime) -> bool:
    """Not revoked and not expired; a token whose expiry is `now` has expired (stored times without
    a zone are UTC, as SQLite returns them)."""
    return not revoked and (expires_at is None or as_utc(expires_at) > as_utc(now))
