"""Batched, ordered persistence of ansible-runner events (one insert per batch, not per event).

Rows are scrubbed as they come in (`scrub`, the runner passes `private_dirs.scrub`): events are read
by the job's tenant through the API, the SSE stream and the dashboard, and the worker's private
paths (its phase data dirs, temp dirs, SSH key files) are neither theirs nor useful to them.
The free-text fields are cut to their limits only after scrubbing: a path cut in two by the limit
would no longer match the scrubber and its first half would be stored."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from provisioner.core.timeutil import utcnow
from provisioner.store.models import Job, JobEvent
from workers.db_retry import with_retry

# How much longer than its limit a free-text field may reach the sink: a private path that starts
# before the limit must arrive whole to be scrubbed (PATH_MAX), yet a task's megabytes of output are
# not carried around only to be cut.
SCRUB_SLACK = 4096
TASK_MAX = 512  # the task column's length


def event_row(ev: dict[str, Any], *, job_id: int, seq: int, phase: str, stdout_max: int) -> dict[str, Any]:
    """A row for EventSink.add; its stdout and task are longer than their limits by up to SCRUB_SLACK,
    the sink cuts them after scrubbing."""
    data = ev.get("event_data") or {}
    name = ev.get("event", "")
    nested = data.get("res")
    res: dict[str, Any] = nested if isinstance(nested, dict) else {}
    status = None
    if name == "runner_on_ok":
        status = "changed" if res.get("changed") else "ok"
    elif name == "runner_on_failed":
        status = "ignored" if data.get("ignore_errors") else "failed"
    elif name == "runner_on_unreachable":
        status = "unreachable"
    elif name == "runner_on_skipped":
        status = "skipped"
    stdout = (ev.get("stdout") or "")[: stdout_max + SCRUB_SLACK] or None
    return {
        "job_id": job_id,
        "seq": seq,
        "phase": phase,
        "event": name[:64],
        "host": (data.get("host") or None) and str(data.get("host"))[:64],
        "task": (data.get("task") or None) and str(data.get("task"))[: TASK_MAX + SCRUB_SLACK],
        "status": status,
        "duration_s": data.get("duration"),
        "stdout": stdout,
        "created_at": utcnow(),
    }


class EventSink:
    """Collects rows from ansible-runner's callback thread; a flusher thread writes them in batches.

    `close()` returns only after every row is stored, so a job is never reported finished with
    events still in memory.
    """

    def __init__(self, engine: Engine, job_id: int, start_seq: int, *, batch: int = 500,
                 interval: float = 0.25, scrub: Callable[[str], str] | None = None,
                 stdout_max: int | None = None) -> None:
        self.engine = engine
        self.scrub = scrub
        # The free-text fields that may name paths, and their limits (stdout is TEXT: the setting's).
        self.limits: dict[str, int | None] = {"stdout": stdout_max, "task": TASK_MAX}
        self.job_id = job_id
        self.seq = start_seq
        self.batch = batch
        self.interval = interval
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"events-{job_id}", daemon=True)
        self._thread.start()

    def add(self, row_without_seq: dict[str, Any]) -> int:
        for key, limit in self.limits.items():
            text = row_without_seq.get(key)
            if isinstance(text, str):
                row_without_seq[key] = (self.scrub(text) if self.scrub is not None else text)[:limit]
        with self._lock:
            self.seq += 1
            row_without_seq["seq"] = self.seq
            self._rows.append(row_without_seq)
            full = len(self._rows) >= self.batch
        if full:
            self._wake.set()
        return self.seq

    def next_seq(self) -> int:
        with self._lock:
            return self.seq + 1

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self.engine.begin() as conn:
            conn.execute(insert(JobEvent), rows)
            conn.execute(update(Job).where(col(Job.id) == self.job_id).values(event_count=rows[-1]["seq"]))

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            # Read the flag before taking rows: everything added before close() is in this take.
            stopping = self._stop
            try:
                rows = self._take()
                with_retry(f"events of job {self.job_id}", partial(self._write, rows))
            except BaseException as exc:  # kept for close(): a job must not pass with events lost
                self._error = exc
            if stopping:
                return

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"storing job events failed: {self._error}") from self._error
