"""A job's live progress as Server-Sent Events, read from the database so any API process can serve it.

The stream sends each stored event once, in order, as `event: event` with `id: <seq>`; a `job`
event (no id) whenever the job's status or phase changes; and `end` with the final job once the
job has ended and every event was sent. A client that reconnects with `Last-Event-ID: <seq>` (or
`?after_seq=`) continues after that event, so a dropped connection loses nothing.

Wake-up is a short poll of the job row (one primary-key read every `sse_poll_seconds`; the event
rows are read only when its `event_count`, written in the events' own transaction, moved).
bench/bench_sse.py measures the delay from an event's commit to the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi.sse import ServerSentEvent
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from provisioner.api.problems import Problem
from provisioner.api.schemas import EventOut, JobOut
from provisioner.core.job_states import is_terminal
from provisioner.store.db import get_read_engine
from provisioner.store.models import Job, JobEvent

BATCH = 500
# The browser's reconnect delay after a dropped stream (EventSource resends Last-Event-ID).
RETRY_MS = 1000


def resume_point(last_event_id: str | None, after_seq: int) -> int:
    """Where a stream starts: after the Last-Event-ID the client saw, else after `after_seq`."""
    if last_event_id is None or not last_event_id.strip():
        return after_seq
    try:
        seq = int(last_event_id)
    except ValueError:
        raise Problem(400, "stream.bad_last_event_id", f"Last-Event-ID {last_event_id[:40]!r} is not an event number",
                      hint="send the id of the last event received, or leave the header out") from None
    if seq < 0:
        raise Problem(400, "stream.bad_last_event_id", "Last-Event-ID must not be negative",
                      hint="send the id of the last event received, or leave the header out")
    return seq


def _read(job_id: int, after: int) -> tuple[Job | None, list[JobEvent]]:
    with Session(get_read_engine(), expire_on_commit=False) as s:
        job = s.get(Job, job_id)
        if job is None or job.event_count <= after:
            return job, []
        events = s.exec(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after)
                        .order_by(col(JobEvent.seq)).limit(BATCH)).all()
        return job, list(events)


def _job_state(job: Job) -> tuple[Any, ...]:
    return job.status, job.current_phase, tuple((p.get("name"), p.get("status")) for p in job.phases or [])


async def stream_events(job_id: int, after: int, poll_seconds: float) -> AsyncIterator[ServerSentEvent]:
    """The stream of one (visible, checked by the caller) job from event seq `after` on."""
    yield ServerSentEvent(comment="stream of job events", retry=RETRY_MS)
    last_state: tuple[Any, ...] | None = None
    while True:
        job, events = await run_in_threadpool(_read, job_id, after)
        if job is None:
            return
        for e in events:
            yield ServerSentEvent(id=str(e.seq), event="event", data=EventOut.model_validate(e).model_dump(mode="json"))
            after = e.seq
        state = _job_state(job)
        if state != last_state:
            last_state = state
            yield ServerSentEvent(event="job", data=JobOut.model_validate(job).model_dump(mode="json"))
        if len(events) == BATCH:
            continue
        if is_terminal(job.status) and after >= job.event_count:
            yield ServerSentEvent(event="end", data=JobOut.model_validate(job).model_dump(mode="json"))
            return
        await asyncio.sleep(poll_seconds)
