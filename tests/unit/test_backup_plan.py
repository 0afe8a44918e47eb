"""The request's backup block as the host gets it, and drift of what is installed."""

from __future__ import annotations

import pytest

from provisioner.core import backup_plan


@pytest.mark.parametrize(("schedule", "expected"), [
    ("daily", "daily"), ("Weekly", "weekly"), ("hourly", "hourly"), ("1h", "hourly"),
    ("6h", "*-*-* 00/6:00:00"), ("every 5h", "*-*-* 00/5:00:00"), ("24h", "daily"), ("36h", "daily"),
    ("every 2d", "*-*-01/2 00:00:00"), ("7d", "*-*-01/7 00:00:00"),
])
def test_schedule_becomes_systemd_calendar(schedule: str, expected: str) -> None:
    assert backup_plan.on_calendar(schedule) == expected


@pytest.mark.parametrize("schedule", ["monthly", "", "0h", "every day"])
def test_unknown_schedule_is_refused(schedule: str) -> None:
    with pytest.raises(ValueError):
        backup_plan.on_calendar(schedule)


def test_plan_carries_the_request_block() -> None:
    got = backup_plan.plan({"enabled": True, "paths": ["/srv", "/etc"], "retention_days": 14, "schedule": "6h"})
    assert got == {"paths": ["/srv", "/etc"], "retention_days": 14, "schedule": "*-*-* 00/6:00:00"}
    assert backup_plan.plan({"enabled": False, "paths": ["/srv"], "retention_days": 14, "schedule": "daily"}) is None


def test_drift_names_each_difference() -> None:
    want = {"paths": ["/srv", "/etc"], "retention_days": 14, "schedule": "daily"}
    assert backup_plan.drift(want, {"paths": ["/etc", "/srv"], "retention_days": 14, "schedule": "daily"}) == []
    got = backup_plan.drift(want, {"paths": ["/etc", "/srv/data"], "retention_days": 7, "schedule": "weekly"})
    assert len(got) == 3 and "7 days" in got[1] and "'weekly'" in got[2]
    assert backup_plan.drift(want, None) == ["the host's backup configuration could not be read"]
