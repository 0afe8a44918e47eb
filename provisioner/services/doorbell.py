"""The doorbell: when a transaction that queued jobs commits, their ids go to the broker.

The database is the truth and the broker only carries job ids, so a job must never be announced
before the transaction that created it is committed, and a rolled-back job must never be announced
at all. `new_job` registers each job on its session; SQLAlchemy's `after_commit` hook rings once
the commit is done, `after_rollback` forgets. What rings (Dramatiq's actor) is plugged in by the
process that starts the service (`provisioner.cli.service`), so the services never import the
background side. A job whose message cannot be sent is marked (`enqueued_at = NULL`) and the
reconciler sends it again; without a bell installed (a process that only writes), the same mark
hands the job to the reconciler of a process that has one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlmodel import col

from provisioner.store.models import Job

log = logging.getLogger("provisioner.doorbell")

# Sends each id; returns the ids it could not send.
Bell = Callable[[list[int]], list[int]]

_PENDING = "provisioner.doorbell.pending"
_bell: Bell | None = None


def install(bell: Bell | None) -> None:
    """Plug in what rings (None unplugs it: jobs are then left to a reconciler)."""
    global _bell
    _bell = bell


def ring_after_commit(session: Session, job_ids: list[int]) -> None:
    """Announce these jobs once `session`'s transaction commits (never if it rolls back)."""
    session.info.setdefault(_PENDING, []).extend(job_ids)


def ring(job_ids: list[int], mark_with: Session | None = None) -> list[int]:
    """Ring now (for jobs that are committed already); returns the ids that were not sent."""
    failed = list(job_ids) if _bell is None else _bell(list(job_ids))
    if failed and mark_with is not None:
        # Sessions here are bound to an Engine (store.db), never to a Connection.
        bind = cast(Engine, mark_with.get_bind())
        with bind.connect() as conn:
            conn.execute(update(Job).where(col(Job.id).in_(failed)).values(enqueued_at=None))
            conn.commit()
    return failed


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    ids = session.info.pop(_PENDING, None)
    if ids:
        try:
            ring(ids, mark_with=session)
        except Exception:  # the jobs are committed: the reconciler re-sends what was not marked sent
            log.exception("doorbell failed for jobs %s; the reconciler will send them", ids)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
