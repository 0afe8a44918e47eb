"""A job's events keep none of the worker's private paths, even when a path crosses the stdout or
task limit: the sink scrubs the whole text and cuts it afterwards (cut first, the path's first half
would no longer match the scrubber and be stored)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from provisioner.core.timeutil import utcnow
from provisioner.store.config import Settings
from provisioner.store.db import make_engine
from provisioner.store.migrate import upgrade
from provisioner.store.models import Host, Job, JobEvent
from workers import private_dirs
from workers.event_sink import TASK_MAX, EventSink, event_row

STDOUT_MAX = 200


def _running_job(tmp_path: Path) -> tuple[Engine, int]:
    """A SQLite store holding one running job (the sink's rows need it)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    with Session(engine) as s:
        host = Host(name="h", address="192.0.2.1", state="provisioning")
        s.add(host)
        s.flush()
        job = Job(kind="provision", host_id=host.id or 0, status="running")
        s.add(job)
        s.commit()
        return engine, job.id or 0


@pytest.mark.parametrize("before", [STDOUT_MAX - 40, STDOUT_MAX - 1, 3])
def test_a_private_path_across_the_limits_is_scrubbed_whole(tmp_path: Path, before: int) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    engine, job_id = _running_job(tmp_path)
    secret_dir = f"{private_dirs.runs_root(settings)}/h-1-ab/prov-job-x/env/extravars"
    key = str(tmp_path / "keys" / "id_h")
    stdout = "o" * before + secret_dir + " and " + key + " " + "t" * 5000
    task = "k" * (TASK_MAX - 10) + key
    sink = EventSink(engine, job_id, 0, interval=0.01, scrub=private_dirs.scrubber(settings, [key]),
                     stdout_max=STDOUT_MAX)
    ev = {"event": "runner_on_failed", "stdout": stdout, "event_data": {"host": "h", "task": task}}
    sink.add(event_row(ev, job_id=job_id, seq=0, phase="raid", stdout_max=STDOUT_MAX))
    sink.add({"job_id": job_id, "phase": "raid", "event": "driver_output", "host": "h", "task": task,
              "status": None, "duration_s": None, "stdout": stdout, "created_at": utcnow()})
    sink.close()
    with Session(engine) as s:
        rows = s.exec(select(JobEvent).where(col(JobEvent.job_id) == job_id)).all()
    assert len(rows) == 2
    for row in rows:
        assert row.stdout is not None and row.task is not None
        assert len(row.stdout) == STDOUT_MAX and len(row.task) <= TASK_MAX
        for text in (row.stdout, row.task):
            # not even the first characters of a private path: a cut path leaks its beginning
            assert str(tmp_path)[:12] not in text, text
        assert row.stdout.startswith("o" * before + private_dirs.SCRUBBED[: STDOUT_MAX - before])
        assert row.task.startswith("k" * (TASK_MAX - 10) + private_dirs.SCRUBBED_KEY[:10])


def test_an_event_without_a_scrubber_is_still_cut(tmp_path: Path) -> None:
    engine, job_id = _running_job(tmp_path)
    sink = EventSink(engine, job_id, 0, interval=0.01, stdout_max=10)
    sink.add(event_row({"event": "runner_on_ok", "stdout": "x" * 50, "event_data": {"task": "y" * 9000}},
                       job_id=job_id, seq=0, phase="raid", stdout_max=10))
    sink.close()
    with Session(engine) as s:
        row = s.exec(select(JobEvent).where(col(JobEvent.job_id) == job_id)).one()
    assert row.stdout == "x" * 10 and row.task == "y" * TASK_MAX
