"""The in-process harness ends a test's unfinished jobs when the app stops: no phase of a finished test
keeps running (it would cost the next tests time and CPU), and no message of its broker reaches the
next test's worker."""

from __future__ import annotations

import time
from pathlib import Path

from sqlmodel import select

from tests.integration.harness import base_env, running_app, sleep_marker, sleepers


def test_leaving_the_app_stops_unfinished_jobs_and_forgets_their_messages(tmp_path: Path) -> None:
    from dramatiq.brokers.stub import StubBroker

    from provisioner.store.db import session_scope
    from provisioner.store.models import Job
    from workers.broker import get_broker

    marker = sleep_marker(23)  # a sleep no other test runs, so the process is ours
    # One worker thread: the second job waits in the broker while the first one sleeps.
    with running_app(base_env(tmp_path, PROVISIONER_WORKER_THREADS="1")) as w:
        w.enroll("slow", labels={"sleep": marker, "sleep_phase": "wipe"}, pool="p1")
        w.enroll("idle", pool="p2")
        running = w.request(pool="p1").json()["job_ids"][0]
        waiting = w.request(pool="p2").json()["job_ids"][0]
        deadline = time.monotonic() + 60
        while not sleepers(marker):
            assert time.monotonic() < deadline, "the phase never started"
            time.sleep(0.2)
        left = time.monotonic()
    took = time.monotonic() - left
    # Without the harness's cancel, the worker's 10 s stop timeout runs out and the phase goes on.
    assert took < 8, f"stopping the app took {took:.1f}s"
    assert not sleepers(marker), "a phase of the finished test is still running"
    with session_scope() as s:
        jobs = {j.id: j for j in s.exec(select(Job)).all()}
    assert jobs[running].status == "cancelled", jobs[running]
    # The waiting job never started; whoever opens this database again finds it marked to cancel.
    assert jobs[waiting].started_at is None and jobs[waiting].cancel_requested, jobs[waiting]
    broker = get_broker()
    assert isinstance(broker, StubBroker)
    assert all(q.qsize() == 0 for q in broker.queues.values()), "messages left for the next test's worker"
