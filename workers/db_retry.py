"""Riding out a database outage (a PostgreSQL restart or failover) inside a running job.

A job's writes (its events, its progress, its final state) are retried while the database is
unreachable, up to `OUTAGE_S`: a restart that takes seconds must not fail a job whose host did its
work, nor drop its events. Longer than that, the error goes up and the claim's expiry hands the job
to the reconciler as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

log = logging.getLogger("provisioner.db_retry")

T = TypeVar("T")
OUTAGE_S = 120.0
PAUSE_S = 0.5


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def with_retry(what: str, fn: Callable[[], T], session: Session | None = None, outage_s: float = OUTAGE_S) -> T:
    """fn() again until it passes or the outage lasted `outage_s`; a session is rolled back in between
    (its transaction died with the connection)."""
    deadline = time.monotonic() + outage_s
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_outage(exc) or time.monotonic() > deadline:
                raise
            log.warning("%s: database unreachable (%s); retrying", what, type(exc).__name__)
            if session is not None:
                try:
                    session.rollback()
                except Exception:  # the rollback may fail on the dead connection too; the pool replaces it
                    log.debug("rollback after a lost connection failed", exc_info=True)
            time.sleep(PAUSE_S)
