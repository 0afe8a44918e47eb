from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from provisioner.core.sli import PhaseTiming, compute_slis, percentile, seconds_between

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_slis_of_a_successful_job() -> None:
    phases = [PhaseTiming("wipe", at(2), at(5)), PhaseTiming("raid", at(5), at(15))]
    sli = compute_slis(accepted_at=at(0), queued_at=at(0.5), started_at=at(1.5), finished_at=at(16),
                       phases=phases, status="succeeded", slo_target_s=60)
    assert sli == {"queue_wait_s": 1.0, "phases_s": {"wipe": 3.0, "raid": 10.0}, "run_s": 14.5,
                   "engine_overhead_s": 1.5, "total_s": 16.0, "slo_target_s": 60, "slo_met": True}


@pytest.mark.parametrize("total,status,met", [(60, "succeeded", True), (60.001, "succeeded", False),
                                               (1, "failed", False), (1, "cancelled", False)])
def test_slo_boundary_and_failures(total: float, status: str, met: bool) -> None:
    sli = compute_slis(accepted_at=at(0), queued_at=at(0), started_at=at(0), finished_at=at(total), phases=[],
                       status=status, slo_target_s=60)
    assert sli["slo_met"] is met


def test_unfinished_job_has_no_verdict() -> None:
    sli = compute_slis(accepted_at=at(0), queued_at=at(0), started_at=None, finished_at=None,
                       phases=[PhaseTiming("wipe", at(1), None)], status="running", slo_target_s=60)
    assert sli["slo_met"] is None and sli["queue_wait_s"] is None and sli["phases_s"] == {"wipe": None}


def test_seconds_between() -> None:
    assert seconds_between(at(0), at(1.2345)) == 1.234 or seconds_between(at(0), at(1.2345)) == 1.235
    assert seconds_between(None, at(1)) is None


@pytest.mark.parametrize("q,expected", [(0, 1), (50, 5), (90, 9), (99, 10), (100, 10)])
def test_percentile_nearest_rank(q: float, expected: float) -> None:
    assert percentile([float(x) for x in range(10, 0, -1)], q) == expected


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_slo_summary_counts_only_judged_jobs() -> None:
    from provisioner.core.sli import slo_summary

    s = slo_summary([(100.0, True), (2000.0, False), (None, None), (50.0, True), (300.0, False)])
    assert (s.jobs, s.met) == (4, 2)
    assert s.met_ratio == 0.5
    assert (s.p50_s, s.p95_s) == (100.0, 2000.0)


def test_slo_summary_of_nothing() -> None:
    from provisioner.core.sli import slo_summary

    s = slo_summary([(None, None)])
    assert (s.jobs, s.met, s.met_ratio, s.p50_s, s.p95_s) == (0, 0, None, None, None)
