"""HTTP request latency and status of this API process (ASGI middleware).

Unlike the job metrics, which are read from the database, these are counted in the process that
served the request, so every series carries a `process` label (host:pid): with several API
processes behind one port a scrape reaches one of them, and its series stay apart from the others'.
Routes are labelled by their template (/v1/jobs/{job_id}), never the raw path, to bound the series.
"""

from __future__ import annotations

import os
import socket
import time

from prometheus_client import CollectorRegistry, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROCESS = f"{socket.gethostname()}:{os.getpid()}"
REGISTRY = CollectorRegistry(auto_describe=True)
# Most answers take milliseconds; uploads and event streams take seconds to minutes.
REQUEST_SECONDS = Histogram(
    "provisioner_http_request_duration_seconds", "HTTP requests served by this API process: seconds to the "
    "end of the response, by route template, method and status", ["process", "method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY)


class HttpMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering
        t0 = time.perf_counter()

        async def send_status(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUEST_SECONDS.labels(PROCESS, scope.get("method", ""), template, str(status)).observe(
                time.perf_counter() - t0)
