"""Real processes for the distributed tests: `provisioner serve`, `provisioner worker`, a private
redis-server. Each is started in its own session so a test can kill -9 the whole group."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.fh = open(log, "ab")  # noqa: SIM115  (closed in stop)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")} | env
        self.p = subprocess.Popen(args, env=full_env, stdout=self.fh, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def kill9(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
            except ProcessLookupError:
                pass
        self.fh.close()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


class Service(Proc):
    def __init__(self, env: dict[str, str], log: Path, *, worker: bool = False, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [str(BIN / "provisioner"), "serve", "--host", host, "--port", str(self.port)]
        if not worker:
            args.append("--no-worker")
        super().__init__(args, env, log)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start:\n{self.tail()}")
            time.sleep(0.2)


class Worker(Proc):
    def __init__(self, env: dict[str, str], log: Path, processes: int = 1, threads: int = 2) -> None:
        super().__init__([str(BIN / "provisioner"), "worker", "--processes", str(processes),
                          "--threads", str(threads)], env, log)


class RedisServer(Proc):
    def __init__(self, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        super().__init__(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"], {}, log)
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{self.tail()}") from None
                time.sleep(0.1)


def admin_token(env: dict[str, str]) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")} | env
    out = subprocess.run([str(BIN / "provisioner"), "-o", "json", "admin", "init"], env=full_env,
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)["token"]


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def post(self, path: str, body: Any = None) -> Any:
        r = self.c.post(path, json=body or {})
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json()

    def get(self, path: str, **params: Any) -> Any:
        r = self.c.get(path, params=params)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json()

    def wait_job(self, job_id: int, pred: Any = None, timeout: float = 120, poll: float = 0.2) -> dict[str, Any]:
        pred = pred or (lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
        deadline = time.monotonic() + timeout
        while True:
            j = self.get(f"/v1/jobs/{job_id}")
            if pred(j):
                return j
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not reach the condition in {timeout}s: {j}")
            time.sleep(poll)


def customer(api: Api, url: str, tenant: str = "acme") -> Api:
    t = api.post("/v1/tenants", {"name": tenant})
    u = api.post("/v1/users", {"name": f"cust-{tenant}", "role": "customer", "tenant_id": t["id"]})
    tok = api.post(f"/v1/users/{u['id']}/tokens", {"name": "t"})["token"]
    return Api(url, tok)


def operator(api: Api, url: str) -> Api:
    u = api.post("/v1/users", {"name": "op", "role": "operator"})
    return Api(url, api.post(f"/v1/users/{u['id']}/tokens", {"name": "t"})["token"])
