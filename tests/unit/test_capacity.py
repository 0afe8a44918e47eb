"""Capacity arithmetic as tables: a pool's daily use rebuilt from today's, its trend, the run-out day."""

from __future__ import annotations

from datetime import date

import pytest

from provisioner.core.capacity import daily_use, plan, run_out, slope

TODAY = date(2026, 6, 1)


@pytest.mark.parametrize("capacity,in_use,rate,days,when", [
    (10, 4, 2.0, 3.0, date(2026, 6, 4)),        # 6 free at 2/day: gone during the 3rd day from today
    (10, 4, 4.0, 1.5, date(2026, 6, 2)),        # 1.5 days: the last free host goes tomorrow
    (10, 9, 0.5, 2.0, date(2026, 6, 3)),
    (10, 0, 0.1, 100.0, date(2026, 9, 9)),
    (10, 10, 1.0, 0.0, TODAY),                 # full already, whatever the rate
    (10, 12, -1.0, 0.0, TODAY),                # over-full (hosts left capacity while in use)
    (10, 4, 0.0, None, None),                  # flat: never at this rate
    (10, 4, -0.5, None, None),                 # shrinking
    (10, 4, None, None, None),                 # no trend (one day of data)
    (0, 0, 1.0, 0.0, TODAY),                   # an empty pool has nothing free
])
def test_run_out(capacity: int, in_use: int, rate: float | None, days: float | None, when: date | None) -> None:
    assert run_out(capacity, in_use, rate, TODAY) == (days, when)


@pytest.mark.parametrize("points,expected", [
    ([(0, 1), (1, 2), (2, 3)], 1.0),
    ([(0, 5), (1, 5), (2, 5)], 0.0),
    ([(0, 4), (1, 2), (2, 0)], -2.0),
    ([(0, 0), (1, 1), (2, 0), (3, 1)], 0.2),
    ([(0, 3)], None),
    ([(1, 3), (1, 4)], None),
    ([], None),
])
def test_slope(points: list[tuple[float, float]], expected: float | None) -> None:
    got = slope(points)
    assert got == (None if expected is None else pytest.approx(expected))


def test_daily_use_undoes_the_net_taken_since_each_day() -> None:
    net = {date(2026, 5, 30): 2, date(2026, 5, 31): -1, date(2026, 6, 1): 1, date(2026, 5, 1): 9}
    assert daily_use(5, net, date(2026, 5, 29), TODAY) == [
        (date(2026, 5, 29), 3), (date(2026, 5, 30), 5), (date(2026, 5, 31), 4), (TODAY, 5)]
    assert daily_use(5, {}, TODAY, TODAY) == [(TODAY, 5)]
    with pytest.raises(ValueError):
        daily_use(5, {}, date(2026, 6, 2), TODAY)


def test_plan_puts_it_together() -> None:
    # one host taken a day for four days, 6 in use of 10: 4 free at 1/day
    p = plan("gpu", 10, 6, {date(2026, 5, 29 + i) if i < 3 else TODAY: 1 for i in range(4)}, date(2026, 5, 28), TODAY)
    assert [n for _, n in p.series] == [2, 3, 4, 5, 6]
    assert p.rate_per_day == pytest.approx(1.0) and p.days_left == pytest.approx(4.0)
    assert p.runs_out_on == date(2026, 6, 5) and p.utilisation == 0.6
