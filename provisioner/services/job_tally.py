"""Adding a settled job to the running totals behind /metrics (`JobTally`), and reading them back.

settle() calls `add_job` inside the transaction that ends the job: it runs once per job (settle is
a compare-and-set), commits or rolls back with it, and every process reads the same totals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from provisioner.core.slo import JobFacts, Slo, judge
from provisioner.store.models import JobTally

# Phases take seconds (a firewall) to an hour (a large image); jobs up to a few hours.
BUCKETS: tuple[float, ...] = (10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200)


def le_label(upper: float) -> str:
    """The bucket bound as Prometheus' text format writes it (prometheus_client's floatToGoString)."""
    return "+Inf" if math.isinf(upper) else repr(float(upper))


def bucket_of(seconds: float) -> str:
    for upper in BUCKETS:
        if seconds <= upper:
            return le_label(upper)
    return "+Inf"


@dataclass(frozen=True, order=True)
class Observation:
    metric: str
    kind: str
    phase: str
    status: str
    reason: str
    le: str
    seconds: float


def observations(facts: JobFacts, reason: str | None, slos: Iterable[Slo]) -> list[Observation]:
    """What one settled job adds: its duration, each phase's, and one event per SLO it counts for.
    Sorted, so concurrent settles lock the shared rows in one order and cannot deadlock."""
    out: list[Observation] = []
    if facts.total_s is not None:
        out.append(Observation("job", facts.kind, "", facts.status, reason or "", bucket_of(facts.total_s),
                               facts.total_s))
    for name, (status, took) in facts.phases.items():
        if took is not None and status in ("succeeded", "failed", "cancelled"):
            out.append(Observation("phase", facts.kind, name, status, "", bucket_of(took), took))
    for slo in slos:
        verdict = judge(slo, facts)
        if verdict is not None:
            out.append(Observation("slo", slo.name, "", "good" if verdict else "bad", "", "+Inf", 0.0))
    return sorted(out)


def add(session: Session, items: Iterable[Observation]) -> None:
    """Add observations to the totals; the caller commits."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    table = JobTally.__table__  # type: ignore[attr-defined]
    for o in items:
        stmt = insert(table).values(metric=o.metric, kind=o.kind, phase=o.phase, status=o.status, reason=o.reason,
                                    le=o.le, count=1, sum_s=o.seconds)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["metric", "kind", "phase", "status", "reason", "le"],
            set_={"count": table.c.count + 1, "sum_s": table.c.sum_s + o.seconds}))


def read(session: Session) -> list[JobTally]:
    return list(session.exec(select(JobTally)).all())
