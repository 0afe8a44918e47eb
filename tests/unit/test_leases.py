"""The pure lease decision of workers.leases: who gets warned, who gets released."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from provisioner.core.timeutil import iso
from workers.leases import Lease, lease_actions

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def lease(rid: int, status: str, minutes: float, *, naive: bool = False) -> Lease:
    at = NOW + timedelta(minutes=minutes)
    return Lease(rid, status, at.replace(tzinfo=None) if naive else at)


def test_expired_ready_and_failed_are_released_others_wait() -> None:
    leases = [lease(1, "ready", -5), lease(2, "failed", -1), lease(3, "provisioning", -5),
              lease(4, "releasing", -5), lease(5, "ready", 0)]
    release, warn = lease_actions(leases, set(), NOW, HOUR)
    assert release == [1, 2, 5]  # a lease ending exactly now has ended
    assert warn == []


def test_warned_once_per_expiry_within_window() -> None:
    leases = [lease(1, "ready", 30), lease(2, "provisioning", 59), lease(3, "ready", 61),
              lease(4, "released", 10), lease(5, "ready", 30, naive=True)]
    release, warn = lease_actions(leases, set(), NOW, HOUR)
    assert release == [] and warn == [1, 2, 5]
    warned = {(1, iso(NOW + timedelta(minutes=30))), (5, iso(NOW + timedelta(minutes=30)))}
    assert lease_actions(leases, warned, NOW, HOUR)[1] == [2]
    # Extended: a new expiry time is warned about again.
    assert lease_actions([lease(1, "ready", 45)], warned, NOW, HOUR)[1] == [1]
