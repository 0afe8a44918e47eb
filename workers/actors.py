"""Dramatiq actors. `dramatiq workers.actors` (what `provisioner worker` runs) imports this module."""

from __future__ import annotations

import logging

import dramatiq

from workers.broker import get_broker

get_broker()
log = logging.getLogger("provisioner.actors")


@dramatiq.actor(queue_name="jobs", max_retries=0)
def run_job(job_id: int) -> None:
    from workers.runner import run_job as _run

    outcome = _run(job_id)
    log.info("job %s: %s", job_id, outcome)


def enqueue(job_ids: list[int]) -> list[int]:
    """Rings the doorbell for each job; returns the ids that could not be sent (the reconciler
    re-sends them: the jobs are safe in the database either way)."""
    failed: list[int] = []
    for jid in job_ids:
        try:
            run_job.send(jid)
        except Exception:
            log.exception("could not enqueue job %s; the reconciler will retry", jid)
            failed.append(jid)
    return failed
