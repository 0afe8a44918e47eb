"""Job status machine: queued → running → succeeded | failed | cancelled (running → queued on retry)."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


J = JobStatus
TERMINAL = frozenset({J.succeeded, J.failed, J.cancelled})

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    J.queued: frozenset({J.running, J.cancelled, J.failed}),
    # running → queued is the reconciler retrying a job whose worker died.
    J.running: frozenset({J.succeeded, J.failed, J.cancelled, J.queued}),
    J.succeeded: frozenset(),
    J.failed: frozenset(),
    J.cancelled: frozenset(),
}


def can_transition(current: JobStatus | str, target: JobStatus | str) -> bool:
    return JobStatus(target) in ALLOWED[JobStatus(current)]


def is_terminal(status: JobStatus | str) -> bool:
    return JobStatus(status) in TERMINAL
