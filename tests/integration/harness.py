"""Test harness: the app in-process (TestClient) with its embedded worker, and a populated world
of tenants, users and tokens for each role."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from fastapi.testclient import TestClient

from provisioner.store.config import get_settings
from provisioner.store.db import reset_engines, session_scope

REPO = Path(__file__).resolve().parents[2]
TEST_PLAYBOOKS = REPO / "tests" / "playbooks"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZ0ZXN0a2V5Zm9ydGhlcHJvdmlzaW9uZXJ0ZXN0cw test@example"


def sleep_marker(seconds: int) -> str:
    """A `sleep` length that no other running test uses, for a test that looks for its phase's
    process among all of the machine's: the fraction is this process's id (fixed width, so no marker
    is the prefix of another), since parallel test processes (pytest -n) run the same test at once."""
    return f"{seconds}.{os.getpid():07d}"


def sleepers(marker: str) -> list[psutil.Process]:
    """Every process of the machine running `sleep <marker>`, a child whose parent died included."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.info["cmdline"] and f"sleep {marker}" in " ".join(p.info["cmdline"]):
                found.append(p)
        except psutil.Error:
            pass
    return found


def configure(env: dict[str, str]) -> None:
    for k in [k for k in os.environ if k.startswith("PROVISIONER_")]:
        del os.environ[k]
    os.environ.update(env)
    get_settings.cache_clear()
    reset_engines()


def base_env(tmp: Path, db_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        "PROVISIONER_DATA_DIR": str(tmp / "data"),
        "PROVISIONER_PLAYBOOK_DIR": str(TEST_PLAYBOOKS),
        "PROVISIONER_ALLOW_LOCAL_CONNECTION": "1",
        "PROVISIONER_RECONCILE_SECONDS": "1",
        "PROVISIONER_REQUEUE_AFTER_SECONDS": "5",
        "PROVISIONER_CLAIM_SECONDS": "6",
        "PROVISIONER_HEARTBEAT_SECONDS": "1",
    }
    if db_url:
        env["PROVISIONER_DATABASE_URL"] = db_url
    env.update(extra)
    return env


@dataclass
class World:
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self.h(who), **kw)

    def post(self, who: str, path: str, body: Any = None, **kw: Any) -> Any:
        return self.client.post(path, headers=self.h(who), json=body if body is not None else {}, **kw)

    def enroll(self, name: str, *, wait: bool = True, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "address": "127.0.0.1", "connection": "local"} | fields
        r = self.post("operator", "/v1/hosts", body)
        assert r.status_code == 201, r.text
        host = r.json()
        if wait and body.get("commission", True):
            host = self.wait_host(host["id"], lambda h: h["state"] != "commissioning")
        return host

    def wait_host(self, host_id: int, pred: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            h = self.get("operator", f"/v1/hosts/{host_id}").json()
            if pred(h):
                return h
            if time.monotonic() > deadline:
                raise AssertionError(f"host {host_id} did not reach the condition in {timeout}s: {h}")
            time.sleep(0.2)

    def wait_job(self, job_id: int, timeout: float = 120, who: str = "operator") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            j = self.get(who, f"/v1/jobs/{job_id}").json()
            if j["status"] in ("succeeded", "failed", "cancelled"):
                return j
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {j['status']} after {timeout}s: {j}")
            time.sleep(0.2)

    def request(self, who: str = "cust_a", **fields: Any) -> Any:
        body = {"ssh_public_key": PUBKEY} | fields
        return self.post(who, "/v1/requests", body)


def bare_metal_host(name: str, pool: str = "default") -> int:
    """An available host enrolled by its BMC, written straight into the store: a BMC where nothing
    answers, so its deploy fails at its first phase (the deploy that works, on a lab VM, is
    tests/e2e/test_bare_metal_deploy.py)."""
    from provisioner.store.models import Host

    with session_scope() as s:
        h = Host(name=name, address="192.0.2.10", driver="redfish", state="available", pool=pool,
                 bmc_url="https://127.0.0.1:9/redfish/v1/Systems/1")
        s.add(h)
        s.commit()
        return h.id or 0


def populate(client: TestClient) -> World:
    from provisioner.services.bootstrap import init_admin

    with session_scope() as s:
        admin = init_admin(s)
    w = World(client, tokens={"admin": admin})
    for t in ("acme", "globex"):
        r = w.post("admin", "/v1/tenants", {"name": t})
        assert r.status_code == 201, r.text
        w.ids[t] = r.json()["id"]
    users = {"operator": ("operator", None), "auditor": ("auditor", None), "imager": ("imager", "acme"),
             "cust_a": ("customer", "acme"), "cust_b": ("customer", "globex"), "admin2": ("admin", None)}
    for name, (role, tenant) in users.items():
        r = w.post("admin", "/v1/users", {"name": name, "role": role,
                                          "tenant_id": w.ids[tenant] if tenant else None})
        assert r.status_code == 201, r.text
        w.ids[name] = r.json()["id"]
        r = w.post("admin", f"/v1/users/{w.ids[name]}/tokens", {"name": "test"})
        w.tokens[name] = r.json()["token"]
    return w


def stop_unfinished_jobs() -> None:
    """Teardown: ask every job still queued or running to stop. Its worker thread then ends at the
    next heartbeat (stopping ansible's process tree) instead of playing the remaining phases while
    the app shuts down, up to the worker's 10 s stop timeout and then on in the background of the
    next test. The test has asserted all it wanted by then."""
    from sqlalchemy import update
    from sqlalchemy.exc import SQLAlchemyError
    from sqlmodel import col

    from provisioner.store.models import Job

    try:
        with session_scope() as s:
            s.execute(update(Job).where(col(Job.status).in_(("queued", "running"))).values(cancel_requested=True))
            s.commit()
    except SQLAlchemyError:
        pass  # a test that took the database away: the worker's stop timeout still bounds the wait


def forget_queued_messages() -> None:
    """The in-process broker lives as long as the test process: messages the stopped worker had not
    taken yet would otherwise be delivered to the next test's worker, with ids of another database."""
    from dramatiq.brokers.stub import StubBroker

    from workers.broker import get_broker

    broker = get_broker()
    if isinstance(broker, StubBroker):
        broker.flush_all()


@contextmanager
def running_app(env: dict[str, str]) -> Iterator[World]:
    configure(env)
    from provisioner.cli.service import build_app

    app = build_app(get_settings())
    with TestClient(app) as client:
        try:
            yield populate(client)
        finally:
            stop_unfinished_jobs()
    forget_queued_messages()
    reset_engines()
