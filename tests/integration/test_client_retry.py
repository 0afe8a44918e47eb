"""The Python client (and so the CLI) repeats reads answered 503 after Retry-After, never writes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from provisioner.client import ApiError, Client, retry_after


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 (Retry-After: 0) to the first `fail` requests, then 200."""

    fail = 2
    seen: list[str] = []

    def _answer(self) -> None:
        Flaky.seen.append(self.command)
        if len(Flaky.seen) <= Flaky.fail:
            body = b'{"code": "database.unavailable", "detail": "down"}'
            self.send_response(503)
            self.send_header("Retry-After", "0")
        else:
            body = b'{"ok": true}'
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Flaky.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_reads_are_repeated_after_503(server: str) -> None:
    assert Client(server, "prov_x_y").get("/v1/jobs") == {"ok": True}
    assert Flaky.seen == ["GET", "GET", "GET"]


def test_writes_are_not_repeated(server: str) -> None:
    with pytest.raises(ApiError) as exc:
        Client(server, "prov_x_y").post("/v1/requests", {})
    assert exc.value.status == 503 and exc.value.problem["code"] == "database.unavailable"
    assert Flaky.seen == ["POST"]


def test_reads_give_up_after_three_retries(server: str) -> None:
    Flaky.fail = 10
    try:
        with pytest.raises(ApiError) as exc:
            Client(server, "prov_x_y").get("/v1/jobs")
        assert exc.value.status == 503 and len(Flaky.seen) == 4
    finally:
        Flaky.fail = 2


@pytest.mark.parametrize("header,wait", [(None, 1.0), ("0", 0.0), ("2.5", 2.5), ("120", 5.0), ("soon", 1.0),
                                         ("-3", 0.0)])
def test_retry_after_is_bounded(header: str | None, wait: float) -> None:
    assert retry_after(header) == wait
