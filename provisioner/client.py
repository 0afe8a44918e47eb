"""A small HTTP client for the API (used by the CLI and usable from Python scripts)."""

from __future__ import annotations

import os
from typing import Any

import httpx


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
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ApiError(0, {"code": "client.unreachable", "detail": f"cannot reach {self.url}: {exc}",
                               "hint": "is `provisioner serve` running? set PROVISIONER_URL"}) from exc
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"code": f"http.{r.status_code}", "detail": r.text[:500]}
            raise ApiError(r.status_code, body)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {})
