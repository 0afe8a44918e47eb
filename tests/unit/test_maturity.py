"""The maturity matrix's levels follow the measured numbers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from provisioner.core.maturity import Facts, score

GOOD = Facts(slos_defined=5, slos_with_events=4, slos_met=4, alert_rules=7, burn_alert_rules=2, hosts_in_use=10,
             restores_recent=10, restores_recent_passed=10, pools=4, pools_planned=4, pools_running_out_soon=0,
             toil_now=3, toil_before=5)


def test_capacity_is_not_scored_where_it_is_not_planned() -> None:
    rows = {r.area for r in score(replace(GOOD, pools_planned=None))}
    assert "capacity planned" not in rows and "restores tested" in rows


@pytest.mark.parametrize("change,area,level", [
    ({}, "SLOs defined and met", 3),
    ({"slos_met": 3}, "SLOs defined and met", 2),
    ({"slos_with_events": 0, "slos_met": 0}, "SLOs defined and met", 1),
    ({"slos_defined": 0}, "SLOs defined and met", 0),
    ({}, "alerts wired", 3),
    ({"burn_alert_rules": 0}, "alerts wired", 1),
    ({"alert_rules": 0, "burn_alert_rules": 0}, "alerts wired", 0),
    ({}, "restores tested", 3),
    ({"restores_recent_passed": 9}, "restores tested", 2),
    ({"restores_recent": 4, "restores_recent_passed": 4}, "restores tested", 1),
    ({"restores_recent": 0, "restores_recent_passed": 0}, "restores tested", 0),
    ({}, "capacity planned", 3),
    ({"pools_running_out_soon": 1}, "capacity planned", 2),
    ({"pools_planned": 3}, "capacity planned", 1),
    ({"pools": 0, "pools_planned": 0}, "capacity planned", 0),
    ({}, "toil trend", 3),
    ({"toil_now": 5}, "toil trend", 2),
    ({"toil_now": 6}, "toil trend", 1),
    ({"toil_now": 0, "toil_before": 0}, "toil trend", 3),
])
def test_levels(change: dict, area: str, level: int) -> None:
    rows = {r.area: r for r in score(replace(GOOD, **change))}
    assert rows[area].level == level, rows[area]
    assert rows[area].evidence
