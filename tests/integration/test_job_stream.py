"""The job stream (Server-Sent Events) over real HTTP between two API processes on one PostgreSQL:
events written by the worker's EventSink reach the client in order; a client whose connection drops
resumes on the *other* process with Last-Event-ID and loses no event and sees none twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse
from sqlalchemy import update
from sqlmodel import Session, col

from provisioner.store.db import make_engine
from provisioner.store.migrate import upgrade
from provisioner.store.models import Host, Job
from tests.integration.procs import Api, Service, admin_token, customer
from workers.event_sink import EventSink, event_row

pytestmark = pytest.mark.pg

N_EVENTS = 120


def _row(i: int, job_id: int) -> dict:
    ev = {"event": "runner_on_ok", "stdout": f"ok {i}", "event_data": {"host": "h", "task": f"task {i}"}}
    return event_row(ev, job_id=job_id, seq=0, phase="raid", stdout_max=4000)


def test_stream_resumes_on_another_process_without_loss(pg_url: str, tmp_path: Path) -> None:
    env = {"PROVISIONER_DATABASE_URL": pg_url, "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
           "PROVISIONER_RUN_RECONCILER": "0", "PROVISIONER_BROKER_URL": "redis://127.0.0.1:6379/15"}
    engine = make_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    upgrade(engine)
    token = admin_token(env)
    a = Service(env, tmp_path / "a.log")
    b = Service(env, tmp_path / "b.log")
    try:
        cust = customer(Api(a.url, token), a.url)
        tenant_id = cust.get("/v1/me")["tenant_id"]
        with Session(engine) as s:
            host = Host(name="h", address="192.0.2.1", state="provisioning", tenant_id=tenant_id)
            s.add(host)
            s.flush()
            job = Job(kind="provision", host_id=host.id or 0, tenant_id=tenant_id, status="running")
            s.add(job)
            s.commit()
            job_id, host_id = job.id or 0, host.id or 0

        def produce() -> None:
            sink = EventSink(engine, job_id, 0, interval=0.02)
            for i in range(N_EVENTS):
                sink.add(_row(i, job_id))
                time.sleep(0.005)
            sink.close()
            with Session(engine) as s:
                s.exec(update(Job).where(col(Job.id) == job_id).values(status="succeeded"))
                s.commit()

        producer = threading.Thread(target=produce)
        producer.start()
        seen: list[int] = []
        kinds: list[str] = []
        headers = dict(cust.c.headers)
        with httpx.Client(timeout=30) as http:
            with connect_sse(http, "GET", f"{a.url}/v1/jobs/{job_id}/stream", headers=headers) as src:
                assert src.response.headers["content-type"].startswith("text/event-stream")
                for sse in src.iter_sse():
                    kinds.append(sse.event)
                    if sse.event == "event":
                        seen.append(int(sse.id))
                        assert sse.json()["seq"] == int(sse.id)
                    if len(seen) == 40:
                        break  # the connection drops here (closed mid-stream)
            last = seen[-1]
            with connect_sse(http, "GET", f"{b.url}/v1/jobs/{job_id}/stream",
                             headers=headers | {"Last-Event-ID": str(last)}) as src:
                for sse in src.iter_sse():
                    kinds.append(sse.event)
                    if sse.event == "event":
                        seen.append(int(sse.id))
                    if sse.event == "end":
                        assert sse.json()["status"] == "succeeded"
                        break
        producer.join()
        assert seen == list(range(1, N_EVENTS + 1)), "events lost or repeated across the reconnect"
        assert kinds[-1] == "end" and "job" in kinds
        # Refusals come before the stream starts, as problem documents.
        r = cust.c.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": "abc"})
        assert (r.status_code, r.json()["code"]) == (400, "stream.bad_last_event_id")
        with Session(engine) as s:
            other = Job(kind="provision", host_id=host_id, status="running")  # no tenant: not the customer's
            s.add(other)
            s.commit()
            other_id = other.id
        r = cust.c.get(f"/v1/jobs/{other_id}/stream")
        assert (r.status_code, r.json()["code"]) == (404, "job.not_found")
    finally:
        a.stop()
        b.stop()
        engine.dispose()
