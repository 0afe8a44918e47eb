"""Capacity plans: a pool's use day by day, its trend, and the day it runs out at that rate.

Plain arithmetic over counts the database hands over. A pool's *capacity* is its hosts that can
serve a request (not retired, not in maintenance, not failed); *in use* are those provisioning,
active or releasing. The use of a past day is rebuilt from today's by undoing the net hosts taken
since (succeeded provisions minus succeeded releases); the *rate* is the least-squares slope of that
daily series, in hosts per day; at a positive rate the free hosts last free / rate days.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

# Host states that count towards a pool's capacity, and those of them that are in use.
CAPACITY_STATES = frozenset({"enrolled", "commissioning", "available", "provisioning", "active", "releasing"})
IN_USE_STATES = frozenset({"provisioning", "active", "releasing"})


@dataclass(frozen=True)
class PoolPlan:
    pool: str
    capacity: int
    in_use: int
    # (day, hosts in use at the end of that day), oldest first, the last day is today.
    series: tuple[tuple[date, int], ...]
    # Hosts per day (least-squares slope of `series`); None with fewer than two days.
    rate_per_day: float | None
    # Days until no host is free at that rate; 0 when none is free already; None: not at this rate.
    days_left: float | None
    runs_out_on: date | None

    @property
    def utilisation(self) -> float | None:
        return None if self.capacity == 0 else self.in_use / self.capacity


def daily_use(in_use_now: int, net_taken: Mapping[date, int], first: date, today: date) -> list[tuple[date, int]]:
    """Hosts in use at the end of each day from `first` to `today`, given today's count and the net
    hosts taken on each day (a day missing from `net_taken` took none)."""
    if first > today:
        raise ValueError(f"first day {first} is after today {today}")
    days = [first + timedelta(days=i) for i in range((today - first).days + 1)]
    out: list[tuple[date, int]] = []
    use = in_use_now
    for d in reversed(days):
        out.append((d, use))
        use -= net_taken.get(d, 0)
    return list(reversed(out))


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def run_out(capacity: int, in_use: int, rate_per_day: float | None, today: date) -> tuple[float | None, date | None]:
    """(days left, the day it runs out) at `rate_per_day`. Already full: (0, today). A flat or
    falling rate never runs out: (None, None). The day is the one during which the last free host
    goes: today + floor(days left)."""
    free = capacity - in_use
    if free <= 0:
        return 0.0, today
    if rate_per_day is None or rate_per_day <= 0:
        return None, None
    days = free / rate_per_day
    return days, today + timedelta(days=math.floor(days))


def plan(pool: str, capacity: int, in_use: int, net_taken: Mapping[date, int], first: date, today: date) -> PoolPlan:
    series = daily_use(in_use, net_taken, first, today)
    rate = slope([(float((d - first).days), float(n)) for d, n in series])
    days, when = run_out(capacity, in_use, rate, today)
    return PoolPlan(pool, capacity, in_use, tuple(series), rate, days, when)
