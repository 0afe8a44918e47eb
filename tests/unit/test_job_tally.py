"""What one settled job adds to the /metrics totals: buckets, phases, SLO events (pure part)."""

from __future__ import annotations

import pytest

from provisioner.core.slo import DEFAULT_SLOS, JobFacts
from provisioner.services.job_tally import BUCKETS, Observation, bucket_of, le_label, observations


@pytest.mark.parametrize("seconds,le", [(0, "10.0"), (10, "10.0"), (10.001, "30.0"), (1800, "1800.0"),
                                        (3600, "3600.0"), (7200, "7200.0"), (7200.5, "+Inf")])
def test_bucket_bounds_are_inclusive(seconds: float, le: str) -> None:
    assert bucket_of(seconds) == le


def test_buckets_span_half_a_minute_to_an_hour_and_more() -> None:
    assert 30 in BUCKETS and 3600 in BUCKETS and list(BUCKETS) == sorted(BUCKETS)
    assert le_label(float("inf")) == "+Inf" and le_label(30) == "30.0"


def test_a_failed_provision_adds_its_duration_phases_and_slo_events() -> None:
    facts = JobFacts("provision", "failed", 700.0,
                     {"wipe": ("succeeded", 20.0), "image": ("succeeded", 650.0), "firewall": ("failed", 5.0)})
    obs = observations(facts, "phase_failed", DEFAULT_SLOS)
    assert obs == sorted(obs)
    assert Observation("job", "provision", "", "failed", "phase_failed", "900.0", 700.0) in obs
    assert Observation("phase", "provision", "firewall", "failed", "", "10.0", 5.0) in obs
    assert Observation("phase", "provision", "image", "succeeded", "", "900.0", 650.0) in obs
    slo = {(o.kind, o.status) for o in obs if o.metric == "slo"}
    assert slo == {("provision-handover", "bad"), ("provision-image", "good")}


def test_a_cancelled_job_counts_for_no_slo() -> None:
    obs = observations(JobFacts("provision", "cancelled", 5.0, {}), None, DEFAULT_SLOS)
    assert [o.metric for o in obs] == ["job"] and obs[0].reason == ""
