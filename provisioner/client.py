"""A small HTTP client for the API (used by the CLI and usable from Python scripts)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

READ_RETRIES = 3
# A job stream that drops is resumed this many times in a row (Last-Event-ID), a second apart.
STREAM_RECONNECTS = 30
MAX_RETRY_WAIT_S = 5.0


def retry_after(header: str | None) -> float:
    """Seconds to wait from a Retry-After header (seconds form), bounded; 1 s when absent or odd."""
    try:
        return min(max(float(header), 0.0), MAX_RETRY_WAIT_S) if header is not None else 1.0
    except ValueError:
        return 1.0


class ApiError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        code = problem.get("code", f"http.{status}")
        detail = problem.get("detail", "")
        hint = problem.get("hint")
        super().__init__(f"{code}: {detail}" + (f"\n  hint: {hint}" if hint else ""))


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("PROVISIONER_URL") or "http://127.0.0.1:8080").rstrip("/")
        self.token = token or os.environ.get("PROVISIONER_TOKEN")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        r = self._send(method, path, **kw)
        # A 503 (database briefly unreachable, ...) says when to come back. Reads are safe to repeat
        # (a `jobs watch` survives a database restart); writes are not: their outcome is reported.
        for _ in range(READ_RETRIES if method in ("GET", "HEAD") else 0):
            if r.status_code != 503:
                break
            time.sleep(retry_after(r.headers.get("retry-after")))
            r = self._send(method, path, **kw)
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"code": f"http.{r.status_code}", "detail": r.text[:500]}
            raise ApiError(r.status_code, body)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ApiError(0, {"code": "client.unreachable", "detail": f"cannot reach {self.url}: {exc}",
                               "hint": "is `provisioner serve` running? set PROVISIONER_URL"}) from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def stream_job(self, job_id: int, after_seq: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event name, data) from GET /v1/jobs/{id}/stream until its `end` event. A dropped
        connection is resumed from the last event seen (Last-Event-ID): no event is lost or repeated."""
        last = after_seq
        drops = 0
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                # No read timeout: between events the server sends only keep-alive comments.
                with connect_sse(self.http, "GET", f"/v1/jobs/{job_id}/stream", headers=headers,
                                 timeout=httpx.Timeout(30.0, read=None)) as src:
                    if src.response.status_code >= 400:
                        src.response.read()
                        try:
                            body = src.response.json()
                        except ValueError:
                            body = {"code": f"http.{src.response.status_code}", "detail": src.response.text[:500]}
                        raise ApiError(src.response.status_code, body)
                    for sse in src.iter_sse():
                        drops = 0
                        if sse.id:
                            last = int(sse.id)
                        if sse.event in ("event", "job", "end"):
                            yield sse.event, json.loads(sse.data)
                        if sse.event == "end":
                            return
            except (httpx.HTTPError, SSEError) as exc:
                drops += 1
                if drops > STREAM_RECONNECTS:
                    raise ApiError(0, {"code": "client.stream_lost",
                                       "detail": f"the job stream of {self.url} dropped {drops} times: {exc}",
                                       "hint": "is the service running? `provisioner jobs events` pages instead"}
                                   ) from exc
            time.sleep(1.0)
