"""Service level objectives as data, and their error-budget arithmetic: plain functions, no I/O.

An SLO judges finished jobs one by one (`judge`: good, bad, or not counted); over a period the
share of bad events spends the error budget (1 - objective), and over shorter windows the same
share divided by the budget is the burn rate. The alert pairs are the SRE workbook's
multi-window, multi-burn-rate table (chapter 5, "Alerting on SLOs"): a pair fires when both its
long and its short window burn at least at its factor, so a burst that has stopped stops paging.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from provisioner.core.timeutil import as_utc


class SliKind(StrEnum):
    # The job (or one of its phases) succeeded within `threshold_s`, counted from acceptance.
    latency = "latency"
    # The job ran its restore test and the restore passed.
    restore = "restore"


@dataclass(frozen=True)
class Slo:
    name: str
    description: str
    job_kind: str
    sli: SliKind
    objective: float
    period: timedelta = timedelta(days=28)
    threshold_s: float | None = None
    # Judge this phase of the job instead of the whole job.
    phase: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.objective < 1:
            raise ValueError(f"SLO {self.name}: objective must be within (0, 1), got {self.objective}")
        if self.sli is SliKind.latency and (self.threshold_s is None or self.threshold_s <= 0):
            raise ValueError(f"SLO {self.name}: a latency SLO needs a positive threshold_s")
        if self.period <= timedelta(0):
            raise ValueError(f"SLO {self.name}: period must be positive")

    @property
    def budget(self) -> float:
        """The share of events allowed to be bad."""
        return error_budget(self.objective)


@dataclass(frozen=True)
class BurnAlert:
    """Fire when both windows burn at least `factor` times the sustainable rate."""

    name: str
    severity: str
    long_window: timedelta
    short_window: timedelta
    factor: float

    def budget_spent(self, period: timedelta) -> float:
        """Share of the period's budget gone when the long window burns at exactly `factor`."""
        return self.factor * (self.long_window / period)


# SRE workbook, table 5-8 (for a 30-day period; on 28 days the shares differ by 7 %).
BURN_ALERTS: tuple[BurnAlert, ...] = (
    BurnAlert("fast-1h", "page", timedelta(hours=1), timedelta(minutes=5), 14.4),
    BurnAlert("fast-6h", "page", timedelta(hours=6), timedelta(minutes=30), 6.0),
    BurnAlert("slow-1d", "ticket", timedelta(days=1), timedelta(hours=2), 3.0),
    BurnAlert("slow-3d", "ticket", timedelta(days=3), timedelta(hours=6), 1.0),
)


def window_label(w: timedelta) -> str:
    """5m, 6h, 3d, 28d: how the SRE workbook and Prometheus range selectors write windows."""
    secs = int(w.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def burn_windows(alerts: Sequence[BurnAlert] = BURN_ALERTS) -> tuple[timedelta, ...]:
    return tuple(sorted({w for a in alerts for w in (a.long_window, a.short_window)}))


# The service's objectives. Latency thresholds of whole jobs follow the per-kind targets jobs are
# judged against when they settle (PROVISIONER_SLO_*_SECONDS): `with_targets` applies them.
DEFAULT_SLOS: tuple[Slo, ...] = (
    Slo("provision-handover", "provision jobs hand the host over within the target, counted from the "
        "request's acceptance", "provision", SliKind.latency, 0.99, threshold_s=30 * 60),
    Slo("provision-image", "the image phase of a provision job (stream, write, read back) succeeds within "
        "15 minutes", "provision", SliKind.latency, 0.99, threshold_s=15 * 60, phase="image"),
    # A reimage is the same deploy on a host already handed over: the provision target
    # (PROVISIONER_SLO_PROVISION_SECONDS), counted from the reimage's acceptance.
    Slo("reimage-handover", "reimage jobs hand the host back within the target, counted from the "
        "reimage's acceptance", "reimage", SliKind.latency, 0.99, threshold_s=30 * 60),
    Slo("release", "release jobs return the host within the target", "release", SliKind.latency, 0.99,
        threshold_s=15 * 60),
    Slo("commission", "commission jobs finish within the target", "commission", SliKind.latency, 0.99,
        threshold_s=10 * 60),
    Slo("restore-test", "scheduled compliance checks of handed-over hosts pass their restore test",
        "compliance", SliKind.restore, 0.999),
)


def with_targets(slos: Iterable[Slo], job_targets: Mapping[str, float]) -> tuple[Slo, ...]:
    """Whole-job latency SLOs take the per-kind target from `job_targets` (seconds by job kind)."""
    out = []
    for slo in slos:
        if slo.sli is SliKind.latency and slo.phase is None and slo.job_kind in job_targets:
            slo = Slo(slo.name, slo.description, slo.job_kind, slo.sli, slo.objective, slo.period,
                      float(job_targets[slo.job_kind]), slo.phase)
        out.append(slo)
    return tuple(out)


@dataclass(frozen=True)
class JobFacts:
    """What an SLO needs to know about one finished job. `phases`: name -> (status, seconds) of the
    phases that ran."""

    kind: str
    status: str
    total_s: float | None
    phases: Mapping[str, tuple[str, float | None]] = field(default_factory=dict)
    restore_passed: bool | None = None


def job_facts(*, kind: str, status: str, accepted_at: datetime | None, finished_at: datetime | None,
              phases: Sequence[Mapping[str, Any]] | None, restore_passed: bool | None) -> JobFacts:
    """From a job row's fields; `phases` is the job's phase records (name, status, duration_s)."""
    total = (None if accepted_at is None or finished_at is None
             else (as_utc(finished_at) - as_utc(accepted_at)).total_seconds())
    ran = {str(p["name"]): (str(p.get("status") or ""), _seconds(p.get("duration_s")))
           for p in phases or [] if isinstance(p, Mapping) and p.get("name")}
    return JobFacts(kind, status, total, ran, restore_passed)


def _seconds(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def judge(slo: Slo, job: JobFacts) -> bool | None:
    """True (good), False (bad) or None (not an event of this SLO).

    A cancelled job is the customer's choice, not the service's: never counted. A failed job is bad
    for every whole-job SLO of its kind however fast it failed; a phase SLO counts the jobs that
    reached the phase, and a phase that failed is bad.
    """
    if job.kind != slo.job_kind or job.status not in ("succeeded", "failed"):
        return None
    if slo.sli is SliKind.restore:
        # A check that could not run did not prove the restore either.
        return job.status == "succeeded" and job.restore_passed is True
    assert slo.threshold_s is not None
    if slo.phase is not None:
        if slo.phase not in job.phases:
            return None
        status, took = job.phases[slo.phase]
        if status not in ("succeeded", "failed"):
            return None
        return status == "succeeded" and took is not None and took <= slo.threshold_s
    return job.status == "succeeded" and job.total_s is not None and job.total_s <= slo.threshold_s


@dataclass(frozen=True)
class Event:
    at: datetime
    good: bool


@dataclass(frozen=True)
class Burn:
    window: timedelta
    events: int
    bad: int
    # None when the window holds no event: nothing burned, and nothing to divide by.
    rate: float | None


@dataclass(frozen=True)
class AlertState:
    alert: BurnAlert
    long_rate: float | None
    short_rate: float | None

    @property
    def firing(self) -> bool:
        f = self.alert.factor
        return (self.long_rate is not None and self.short_rate is not None
                and self.long_rate >= f and self.short_rate >= f)


@dataclass(frozen=True)
class SloStatus:
    slo: Slo
    start: datetime
    end: datetime
    events: int
    good: int
    burns: tuple[Burn, ...]
    alerts: tuple[AlertState, ...]

    @property
    def bad(self) -> int:
        return self.events - self.good

    @property
    def attainment(self) -> float | None:
        return None if self.events == 0 else self.good / self.events

    @property
    def budget_events(self) -> float:
        """Bad events the period could afford at its current volume."""
        return self.slo.budget * self.events

    @property
    def budget_remaining(self) -> float:
        """Share of the error budget left: 1 untouched, 0 spent, negative overspent."""
        return budget_remaining(self.events, self.good, self.slo.objective)


def error_budget(objective: float) -> float:
    # 1 - 0.99 is 0.010000000000000009 in binary floating point: a ratio of exactly 1 % would burn
    # at 0.999... and miss a factor-1 alert. Objectives have a few digits; round the noise away.
    return round(1.0 - objective, 12)


def error_ratio(events: int, good: int) -> float | None:
    if events < 0 or good < 0 or good > events:
        raise ValueError(f"need 0 <= good <= events, got good={good} events={events}")
    return None if events == 0 else (events - good) / events


def budget_remaining(events: int, good: int, objective: float) -> float:
    ratio = error_ratio(events, good)
    if ratio is None:
        return 1.0
    return 1.0 - ratio / error_budget(objective)


def burn_rate(events: int, good: int, objective: float) -> float | None:
    """How many times faster than sustainable the budget burns: 1.0 spends it exactly in the period."""
    ratio = error_ratio(events, good)
    return None if ratio is None else ratio / error_budget(objective)


def report_windows(slo: Slo, period: timedelta | None = None,
                   alerts: Sequence[BurnAlert] = BURN_ALERTS) -> tuple[timedelta, ...]:
    """Every window a report of `slo` counts events over: the alert windows and the period."""
    return tuple(sorted(set(burn_windows(alerts)) | {period or slo.period}))


def status_from_counts(slo: Slo, counts: Mapping[timedelta, tuple[int, int]], *, end: datetime,
                       period: timedelta | None = None, alerts: Sequence[BurnAlert] = BURN_ALERTS) -> SloStatus:
    """The SLO's status from (events, bad) per window ending at `end` (every one of
    `report_windows`): what a database that counted the events itself hands over."""
    period = period or slo.period
    burns = {w: Burn(w, n, bad, burn_rate(n, n - bad, slo.objective)) for w, (n, bad) in counts.items()}
    states = tuple(AlertState(a, burns[a.long_window].rate, burns[a.short_window].rate) for a in alerts)
    n, bad = counts[period]
    return SloStatus(slo, end - period, end, n, n - bad, tuple(burns[w] for w in burn_windows(alerts)), states)


def evaluate(slo: Slo, events: Iterable[Event], *, end: datetime, period: timedelta | None = None,
             alerts: Sequence[BurnAlert] = BURN_ALERTS) -> SloStatus:
    """The SLO over (end - period, end] (the SLO's own period by default) with burn rates of every
    alert window ending at `end`. Events after `end` are ignored, so a past period can be judged."""
    # Sorted once, each window is two binary searches.
    timeline = sorted((ev.at, not ev.good) for ev in events if ev.at <= end)
    times = [t for t, _ in timeline]
    bad_before = [0]
    for _, is_bad in timeline:
        bad_before.append(bad_before[-1] + is_bad)
    counts = {}
    for w in report_windows(slo, period, alerts):
        first = bisect_right(times, end - w)  # an event exactly w old has left the window
        counts[w] = (len(times) - first, bad_before[-1] - bad_before[first])
    return status_from_counts(slo, counts, end=end, period=period, alerts=alerts)
