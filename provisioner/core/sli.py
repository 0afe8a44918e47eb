"""Install-time SLIs of one job and whether it met its SLO: plain arithmetic over timestamps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class PhaseTiming:
    name: str
    started_at: datetime | None
    ended_at: datetime | None
    status: str = "succeeded"


def seconds_between(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a).total_seconds(), 3)


def compute_slis(
    *,
    accepted_at: datetime,
    queued_at: datetime,
    started_at: datetime | None,
    finished_at: datetime | None,
    phases: Sequence[PhaseTiming],
    status: str,
    slo_target_s: float,
) -> dict:
    """accepted_at is when the API accepted the customer's request; queued_at when this job was queued.

    The SLO is met only by a job that succeeded within the target: a fast failure is not a success.
    """
    total = seconds_between(accepted_at, finished_at)
    per_phase = {p.name: seconds_between(p.started_at, p.ended_at) for p in phases}
    phase_sum = sum(v for v in per_phase.values() if v is not None)
    run_time = seconds_between(started_at, finished_at)
    overhead = None if run_time is None else round(max(run_time - phase_sum, 0.0), 3)
    met: bool | None
    if total is None:
        met = None
    else:
        met = status == "succeeded" and total <= slo_target_s
    return {
        "queue_wait_s": seconds_between(queued_at, started_at),
        "phases_s": per_phase,
        "run_s": run_time,
        "engine_overhead_s": overhead,
        "total_s": total,
        "slo_target_s": slo_target_s,
        "slo_met": met,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; q in [0, 100]."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class SloSummary:
    """How a set of finished jobs did against their SLO: what the dashboard and reports show."""

    jobs: int
    met: int
    p50_s: float | None
    p95_s: float | None

    @property
    def met_ratio(self) -> float | None:
        return None if self.jobs == 0 else self.met / self.jobs


def slo_summary(outcomes: Iterable[tuple[float | None, bool | None]]) -> SloSummary:
    """`outcomes`: (total seconds, SLO met) per job; jobs without a verdict (not finished) are left
    out, a failed job counts as a miss (its verdict is False)."""
    judged = [(t, met) for t, met in outcomes if met is not None]
    totals = [t for t, _ in judged if t is not None]
    return SloSummary(jobs=len(judged), met=sum(1 for _, met in judged if met),
                      p50_s=percentile(totals, 50), p95_s=percentile(totals, 95))
