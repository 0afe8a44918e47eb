"""Token lookups remembered for a few seconds, so an authenticated read costs one database round
trip instead of two.

What is cached is the token row and its user as read from the database, never a verdict: the
secret is compared and expiry, revocation and the user's state are judged on every request. A
revocation handled by this process forgets the token at once; other API processes see it within
`ttl` seconds (PROVISIONER_AUTH_CACHE_SECONDS; 0 turns the cache off). Unknown tokens are not
cached, so guessing fills nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from cachetools import TTLCache


@dataclass(frozen=True)
class TokenRecord:
    secret_hash: str
    revoked: bool
    expires_at: datetime | None
    user_id: int
    user_name: str
    role: str
    tenant_id: int | None
    user_active: bool


class AuthCache:
    def __init__(self, ttl: float, maxsize: int = 10_000) -> None:
        self._cache: TTLCache[str, TokenRecord] | None = TTLCache(maxsize, ttl) if ttl > 0 else None
        # TTLCache is not thread-safe; API handlers run on a thread pool.
        self._lock = threading.Lock()

    def get(self, token_id: str) -> TokenRecord | None:
        if self._cache is None:
            return None
        with self._lock:
            return self._cache.get(token_id)

    def put(self, token_id: str, record: TokenRecord) -> None:
        if self._cache is not None:
            with self._lock:
                self._cache[token_id] = record

    def forget(self, token_id: str) -> None:
        if self._cache is not None:
            with self._lock:
                self._cache.pop(token_id, None)

    def clear(self) -> None:
        if self._cache is not None:
            with self._lock:
                self._cache.clear()
