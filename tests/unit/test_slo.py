"""SLO budget arithmetic, burn rates and the multi-window alert pairs, as tables worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from provisioner.core.slo import (
    BURN_ALERTS,
    DEFAULT_SLOS,
    Event,
    JobFacts,
    SliKind,
    Slo,
    budget_remaining,
    burn_rate,
    burn_windows,
    evaluate,
    judge,
    with_targets,
)

END = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
P99 = Slo("p", "provision", "provision", SliKind.latency, 0.99, threshold_s=1800)
IMG = Slo("i", "image phase", "provision", SliKind.latency, 0.99, threshold_s=900, phase="image")
RESTORE = Slo("r", "restore", "compliance", SliKind.restore, 0.999)


@pytest.mark.parametrize("events,good,objective,remaining", [
    (0, 0, 0.99, 1.0),            # nothing happened: nothing spent
    (1000, 1000, 0.99, 1.0),
    (1000, 995, 0.99, 0.5),       # 5 bad of the 10 allowed
    (1000, 990, 0.99, 0.0),       # exactly spent
    (1000, 980, 0.99, -1.0),      # overspent by a whole budget
    (100, 0, 0.99, -99.0),
    (10_000, 9_995, 0.999, 0.5),  # 5 of 10 allowed at three nines
    (4, 3, 0.75, 0.0),
])
def test_budget_remaining(events: int, good: int, objective: float, remaining: float) -> None:
    assert budget_remaining(events, good, objective) == pytest.approx(remaining)


@pytest.mark.parametrize("events,good,objective,rate", [
    (0, 0, 0.99, None),
    (100, 100, 0.99, 0.0),
    (100, 99, 0.99, 1.0),         # spends the budget in exactly one period
    (1000, 856, 0.99, 14.4),      # the fast page's factor
    (100, 94, 0.99, 6.0),
    (1000, 999, 0.999, 1.0),
    (10, 0, 0.999, 1000.0),
])
def test_burn_rate(events: int, good: int, objective: float, rate: float | None) -> None:
    got = burn_rate(events, good, objective)
    assert got == (None if rate is None else pytest.approx(rate))


@pytest.mark.parametrize("events,good", [(1, 2), (-1, 0), (3, -1)])
def test_impossible_counts_are_refused(events: int, good: int) -> None:
    with pytest.raises(ValueError):
        budget_remaining(events, good, 0.99)


def test_slo_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="objective"):
        Slo("x", "", "provision", SliKind.latency, 1.0, threshold_s=1)
    with pytest.raises(ValueError, match="threshold"):
        Slo("x", "", "provision", SliKind.latency, 0.99)
    assert {s.name for s in DEFAULT_SLOS} >= {"provision-handover", "restore-test"}


def test_alert_pairs_are_the_workbook_table() -> None:
    # (long, short, factor, share of a 30-day budget spent when it fires)
    table = [(H, 5 * M, 14.4, 0.02), (6 * H, 30 * M, 6, 0.05), (24 * H, 2 * H, 3, 0.10), (72 * H, 6 * H, 1, 0.10)]
    got = [(a.long_window, a.short_window, a.factor, round(a.budget_spent(timedelta(days=30)), 4))
           for a in BURN_ALERTS]
    assert got == table
    assert burn_windows() == (5 * M, 30 * M, H, 2 * H, 6 * H, 24 * H, 72 * H)


def test_targets_from_settings_replace_whole_job_thresholds_only() -> None:
    slos = {s.name: s for s in with_targets(DEFAULT_SLOS, {"provision": 600.0, "release": 60.0})}
    assert slos["provision-handover"].threshold_s == 600.0
    assert slos["release"].threshold_s == 60.0
    assert slos["provision-image"].threshold_s == 900  # a phase keeps its own
    assert slos["commission"].threshold_s == 600


def _phases(**kw: tuple[str, float | None]) -> dict[str, tuple[str, float | None]]:
    return dict(kw)


@pytest.mark.parametrize("slo,job,verdict", [
    (P99, JobFacts("provision", "succeeded", 1800.0), True),
    (P99, JobFacts("provision", "succeeded", 1800.001), False),
    (P99, JobFacts("provision", "failed", 10.0), False),        # a fast failure is no success
    (P99, JobFacts("provision", "cancelled", 10.0), None),      # the customer's choice
    (P99, JobFacts("provision", "running", None), None),
    (P99, JobFacts("release", "succeeded", 10.0), None),
    (P99, JobFacts("provision", "succeeded", None), False),
    (IMG, JobFacts("provision", "succeeded", 2000, _phases(wipe=("succeeded", 5), image=("succeeded", 900))), True),
    (IMG, JobFacts("provision", "succeeded", 2000, _phases(image=("succeeded", 901))), False),
    (IMG, JobFacts("provision", "failed", 2000, _phases(image=("failed", 30))), False),
    (IMG, JobFacts("provision", "failed", 2000, _phases(wipe=("succeeded", 5), image=("succeeded", 60),
                                                        firewall=("failed", 3))), True),
    (IMG, JobFacts("provision", "failed", 20, _phases(wipe=("failed", 5))), None),   # never reached it
    (IMG, JobFacts("provision", "failed", 20, _phases(image=("cancelled", 5))), None),
    (RESTORE, JobFacts("compliance", "succeeded", 60, restore_passed=True), True),
    (RESTORE, JobFacts("compliance", "succeeded", 60, restore_passed=False), False),
    (RESTORE, JobFacts("compliance", "succeeded", 60, restore_passed=None), False),  # no restore ran
    (RESTORE, JobFacts("compliance", "failed", 60, restore_passed=True), False),
    (RESTORE, JobFacts("compliance", "cancelled", 60), None),
])
def test_judge(slo: Slo, job: JobFacts, verdict: bool | None) -> None:
    assert judge(slo, job) is verdict


def _events(spec: list[tuple[timedelta, int, int]]) -> list[Event]:
    """(age before END, good count, bad count) -> events at that age."""
    out = []
    for age, good, bad in spec:
        out += [Event(END - age, True)] * good + [Event(END - age, False)] * bad
    return out


def test_evaluate_counts_each_window_and_the_period() -> None:
    events = _events([(1 * M, 9, 1),            # in every window
                      (20 * M, 10, 0),          # from 30 min up
                      (3 * H, 80, 0),           # from 6 h up
                      (10 * 24 * H, 0, 5),      # only the 28-day period
                      (40 * 24 * H, 0, 50),     # before the period: ignored
                      (-1 * M, 0, 7)])          # after END: ignored
    st = evaluate(P99, events, end=END)
    assert (st.events, st.good, st.bad) == (105, 99, 6)
    assert st.start == END - timedelta(days=28)
    assert st.budget_remaining == pytest.approx(1 - (6 / 105) / 0.01)
    burns = {b.window: (b.events, b.bad, b.rate) for b in st.burns}
    assert burns[5 * M] == (10, 1, pytest.approx(10.0))
    assert burns[30 * M] == (20, 1, pytest.approx(5.0))
    assert burns[H][:2] == (20, 1)
    assert burns[6 * H] == (100, 1, pytest.approx(1.0))
    assert burns[72 * H] == (100, 1, pytest.approx(1.0))


def test_an_event_exactly_one_window_old_has_left_it() -> None:
    st = evaluate(P99, _events([(5 * M, 0, 1)]), end=END)
    burns = {b.window: b for b in st.burns}
    assert burns[5 * M].events == 0 and burns[5 * M].rate is None
    assert burns[30 * M].events == 1


@pytest.mark.parametrize("spec,firing", [
    # a hard outage now: everything in the last hour failed
    ([(M, 0, 10), (30 * M, 0, 10)], {"fast-1h", "fast-6h", "slow-1d", "slow-3d"}),
    # a burst 40 minutes ago (3 of 43 bad in the hour, burn 7): the 6 h page would fire but its
    # 30-minute window has recovered; the tickets, whose short windows still see it, fire
    ([(M, 20, 0), (20 * M, 20, 0), (40 * M, 0, 3)], {"slow-1d", "slow-3d"}),
    # the same burst still going on: the 6 h page fires too
    ([(M, 20, 0), (20 * M, 20, 0), (25 * M, 0, 3)], {"fast-6h", "slow-1d", "slow-3d"}),
    # a steady 2 % error ratio (burn 2): only the 3-day ticket (factor 1)
    ([(age * H + M, 49, 1) for age in range(0, 72)], {"slow-3d"}),
    # 1 % exactly: burning the budget exactly in the period fires the factor-1 ticket
    ([(age * H + M, 99, 1) for age in range(0, 72)], {"slow-3d"}),
    # 0.5 %: within budget, nothing fires
    ([(age * H + M, 199, 1) for age in range(0, 72)], set()),
    # no traffic at all: no rate, nothing fires
    ([], set()),
])
def test_multiwindow_alerts(spec: list[tuple[timedelta, int, int]], firing: set[str]) -> None:
    st = evaluate(P99, _events(spec), end=END)
    assert {a.alert.name for a in st.alerts if a.firing} == firing


def test_a_past_period_can_be_judged() -> None:
    events = _events([(M, 0, 10), (8 * 24 * H, 100, 0)])
    st = evaluate(P99, events, end=END - 7 * 24 * H, period=timedelta(days=7))
    assert (st.events, st.good) == (100, 100) and st.budget_remaining == 1.0
