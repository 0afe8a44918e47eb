"""The token rule shared by the bearer check and dashboard sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.core.token_rules import token_usable

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("revoked", "expires_at", "usable"), [
    (False, None, True),
    (True, None, False),
    (False, NOW + timedelta(seconds=1), True),
    (False, NOW, False),  # the expiry instant itself is past
    (False, NOW - timedelta(days=1), False),
    (True, NOW + timedelta(days=1), False),
    (False, (NOW + timedelta(minutes=5)).replace(tzinfo=None), True),  # SQLite: naive UTC
    (False, (NOW - timedelta(minutes=5)).replace(tzinfo=None), False),
])
def test_token_usable(revoked: bool, expires_at: datetime | None, usable: bool) -> None:
    assert token_usable(revoked, expires_at, NOW) is usable


@given(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC)))
def test_a_token_is_usable_exactly_before_its_expiry(expires_at: datetime, now: datetime) -> None:
    assert token_usable(False, expires_at, now) is (expires_at > now)
    assert token_usable(False, expires_at.replace(tzinfo=None), now) is (expires_at > now)
    assert token_usable(True, expires_at, now) is False
