"""What the backup phase installs for a request's backup block, and whether a host still has it.

The request's block (paths, retention, schedule) is what the guardrails judged at admission; this
module turns it into what the host's systemd timer and restic wrapper get, and compares what a
compliance check read back from the host against it. Pure: no I/O.

Decisions
---------
* Schedules become systemd `OnCalendar` expressions. Named ones (hourly, daily, weekly) are systemd
  names already. Intervals ("6h", "every 2d") restart at midnight (hours) or at the first of the
  month (days), so a gap can be shorter than asked, never longer: backups are never rarer than
  promised.
* An interval of more than a day that is not whole days runs every whole day below it ("36h" runs
  daily), for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.core.guardrails import interval_hours
from provisioner.core.policy import NAMED_SCHEDULES


def on_calendar(schedule: str) -> str:
    """The systemd OnCalendar expression for an admitted schedule; ValueError for anything else."""
    text = schedule.strip().lower()
    if text in NAMED_SCHEDULES:
        return text
    hours = interval_hours(text)
    if hours is None or hours < 1:
        raise ValueError(f"backup schedule {schedule!r} is neither a named schedule nor an interval")
    if hours == 1:
        return "hourly"
    if hours < 24:
        return f"*-*-* 00/{hours}:00:00"
    days = hours // 24
    return "daily" if days == 1 else f"*-*-01/{days} 00:00:00"


def plan(backup: Mapping[str, Any]) -> dict[str, Any] | None:
    """The settings the backup phase applies for a request's backup block; None = backups disabled."""
    if not backup.get("enabled", True):
        return None
    return {"paths": list(backup["paths"]), "retention_days": int(backup["retention_days"]),
            "schedule": on_calendar(str(backup["schedule"]))}


def drift(expected: Mapping[str, Any], observed: Mapping[str, Any] | None) -> list[str]:
    """How the host's installed backup differs from the plan, one sentence per difference.

    `observed` is what the compliance check read from the host ({paths, retention_days, schedule});
    None means the check could not read the installed configuration at all.
    """
    if observed is None:
        return ["the host's backup configuration could not be read"]
    out = []
    want_paths, got_paths = sorted(expected["paths"]), sorted(observed.get("paths") or [])
    if want_paths != got_paths:
        out.append(f"paths are {got_paths}, the request asked for {want_paths}")
    if observed.get("retention_days") != expected["retention_days"]:
        out.append(f"retention is {observed.get('retention_days')!r} days, the request asked for "
                   f"{expected['retention_days']}")
    if observed.get("schedule") != expected["schedule"]:
        out.append(f"schedule is {observed.get('schedule')!r}, the request asked for {expected['schedule']!r}")
    return out
