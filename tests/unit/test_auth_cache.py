from __future__ import annotations

import time

from provisioner.api.auth_cache import AuthCache, TokenRecord

REC = TokenRecord("hash", False, None, 1, "u", "admin", None, True)


def test_remembers_until_ttl_then_forgets() -> None:
    c = AuthCache(ttl=0.2)
    assert c.get("t") is None
    c.put("t", REC)
    assert c.get("t") == REC
    time.sleep(0.3)
    assert c.get("t") is None


def test_forget_and_clear() -> None:
    c = AuthCache(ttl=60)
    c.put("t", REC)
    c.put("u", REC)
    c.forget("t")
    c.forget("never-seen")
    assert c.get("t") is None and c.get("u") == REC
    c.clear()
    assert c.get("u") is None


def test_zero_ttl_turns_it_off() -> None:
    c = AuthCache(ttl=0)
    c.put("t", REC)
    assert c.get("t") is None
