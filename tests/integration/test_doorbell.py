"""The doorbell: jobs are announced after their transaction commits, never after a rollback, and a
job whose message could not be sent is handed to the reconciler (enqueued_at NULL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from provisioner.services import doorbell
from provisioner.services.jobs import new_job
from provisioner.store.config import Settings
from provisioner.store.migrate import upgrade
from provisioner.store.models import Host, Job


class Bell:
    def __init__(self, engine: Engine) -> None:
        self.rung: list[list[int]] = []
        self.fail: set[int] = set()
        self.seen_committed: list[bool] = []
        self.engine = engine

    def __call__(self, ids: list[int]) -> list[int]:
        # What the worker will see: the job must already be committed when the bell rings.
        with Session(self.engine) as other:
            self.seen_committed.append(all(other.get(Job, i) is not None for i in ids))
        self.rung.append(list(ids))
        return [i for i in ids if i in self.fail]


@pytest.fixture
def engine(bare_engine: Engine) -> Iterator[Engine]:
    upgrade(bare_engine)
    yield bare_engine
    doorbell.install(None)


@pytest.fixture
def bell(engine: Engine) -> Bell:
    """A recording bell, installed for the test (the engine fixture unplugs it afterwards)."""
    b = Bell(engine)
    doorbell.install(b)
    return b


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def _host(s: Session, name: str) -> Host:
    h = Host(name=name, address="192.0.2.1")
    s.add(h)
    s.flush()
    return h


def test_rings_after_commit_with_the_committed_jobs(engine: Engine, bell: Bell, settings: Settings) -> None:
    with Session(engine) as s:
        h = _host(s, "a")
        ids = [new_job(s, "provision", h, settings=settings).id, new_job(s, "commission", h, settings=settings).id]
        assert bell.rung == []  # nothing before the commit
        s.commit()
    assert bell.rung == [ids] and bell.seen_committed == [True]


def test_rollback_rings_nothing_and_forgets(engine: Engine, bell: Bell, settings: Settings) -> None:
    with Session(engine) as s:
        h = _host(s, "b")
        new_job(s, "provision", h, settings=settings)
        s.rollback()
        # The same session commits other work later: the rolled-back job must not ring then.
        _host(s, "c")
        s.commit()
    assert bell.rung == []


def test_unsent_jobs_are_left_to_the_reconciler(engine: Engine, bell: Bell, settings: Settings) -> None:
    with Session(engine) as s:
        h = _host(s, "d")
        first = new_job(s, "provision", h, settings=settings).id or 0
        second = new_job(s, "commission", h, settings=settings).id or 0
        bell.fail = {second}
        s.commit()
    with Session(engine) as s:
        got = {j.id: j.enqueued_at for j in (s.get(Job, first), s.get(Job, second)) if j is not None}
    assert got[first] is not None and got[second] is None  # the reconciler re-sends NULLs
    # No bell at all (a process that only writes): every job is handed to a reconciler.
    doorbell.install(None)
    with Session(engine) as s:
        third = new_job(s, "provision", _host(s, "e"), settings=settings).id
        s.commit()
    with Session(engine) as s:
        job = s.get(Job, third)
        assert job is not None and job.enqueued_at is None
