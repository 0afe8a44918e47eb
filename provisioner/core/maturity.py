"""The maturity matrix: how far the service is run the way its own practices say, scored from what
the service review measured. Plain rules over plain numbers, no I/O.

Levels: 0 none, 1 started, 2 measured, 3 managed. Each row says why it got its level.
"""

from __future__ import annotations

from dataclasses import dataclass

LEVELS = ("none", "started", "measured", "managed")


@dataclass(frozen=True)
class Facts:
    slos_defined: int
    slos_with_events: int
    slos_met: int
    # Alert rules shipped (deploy/alerts file) and how many of them are SLO burn alerts.
    alert_rules: int
    burn_alert_rules: int
    hosts_in_use: int
    # In-use hosts whose last restore test is within the period, and of those the ones that passed.
    restores_recent: int
    restores_recent_passed: int
    pools: int
    # Pools with a capacity trend; None: capacity is not planned in this view (a tenant's review: the
    # pools are the operator's), so the row is left out rather than scored on a plan nobody made.
    pools_planned: int | None
    pools_running_out_soon: int
    toil_now: int
    toil_before: int


@dataclass(frozen=True)
class Row:
    area: str
    level: int
    evidence: str

    @property
    def label(self) -> str:
        return LEVELS[self.level]


def score(f: Facts) -> list[Row]:
    rows = []
    if f.slos_defined == 0:
        rows.append(Row("SLOs defined and met", 0, "no SLO is defined"))
    elif f.slos_with_events == 0:
        rows.append(Row("SLOs defined and met", 1, f"{f.slos_defined} SLOs defined, none measured in the period"))
    elif f.slos_met < f.slos_with_events:
        rows.append(Row("SLOs defined and met", 2,
                        f"{f.slos_met} of {f.slos_with_events} measured SLOs met their objective"))
    else:
        rows.append(Row("SLOs defined and met", 3, f"all {f.slos_with_events} measured SLOs met their objective"))

    if f.alert_rules == 0:
        rows.append(Row("alerts wired", 0, "no alert rules shipped"))
    elif f.burn_alert_rules == 0:
        rows.append(Row("alerts wired", 1, f"{f.alert_rules} alert rules, none on SLO burn"))
    else:
        rows.append(Row("alerts wired", 3, f"{f.alert_rules} alert rules, {f.burn_alert_rules} on SLO burn"))

    if f.hosts_in_use == 0:
        rows.append(Row("restores tested", 1, "no host in use to test"))
    elif f.restores_recent == 0:
        rows.append(Row("restores tested", 0, f"none of {f.hosts_in_use} hosts in use had a restore test"))
    elif f.restores_recent < f.hosts_in_use:
        rows.append(Row("restores tested", 1,
                        f"{f.restores_recent} of {f.hosts_in_use} hosts in use had a restore test in the period"))
    elif f.restores_recent_passed < f.restores_recent:
        rows.append(Row("restores tested", 2, f"every host in use tested; "
                        f"{f.restores_recent - f.restores_recent_passed} last restores failed"))
    else:
        rows.append(Row("restores tested", 3, f"all {f.hosts_in_use} hosts in use restored successfully"))

    if f.pools_planned is None:
        pass
    elif f.pools == 0:
        rows.append(Row("capacity planned", 0, "no pool"))
    elif f.pools_planned < f.pools:
        rows.append(Row("capacity planned", 1, f"{f.pools_planned} of {f.pools} pools have a trend"))
    elif f.pools_running_out_soon:
        rows.append(Row("capacity planned", 2, f"{f.pools_running_out_soon} pools run out within 30 days"))
    else:
        rows.append(Row("capacity planned", 3, f"all {f.pools} pools have a trend, none runs out within 30 days"))

    if f.toil_now > f.toil_before:
        rows.append(Row("toil trend", 1, f"toil rose: {f.toil_before} → {f.toil_now} in an equal period"))
    elif f.toil_now == f.toil_before and f.toil_now > 0:
        rows.append(Row("toil trend", 2, f"toil flat at {f.toil_now}"))
    else:
        rows.append(Row("toil trend", 3, f"toil fell or stayed nil: {f.toil_before} → {f.toil_now}"))
    return rows
