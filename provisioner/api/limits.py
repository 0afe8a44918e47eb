"""ASGI middleware: one request id on every response, a hard bound on body size (also when chunked),
and no NUL character in any query value or JSON string, answered as problem+json before a handler
(or the database) sees anything.

Why here and not in each schema: PostgreSQL text cannot hold NUL (psycopg refuses the whole
statement), and every route other engineers add takes strings; one check at the door covers them
all and names the field. The body is read whole before the app runs (it is bounded by `max_body`),
so an oversized chunked body is a 413 rather than whatever the framework makes of a failed read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID = b"x-request-id"


def _problem(status: int, code: str, detail: str, hint: str, rid: str, **extra: Any) -> tuple[bytes, list]:
    body = json.dumps({"type": f"https://provisioner.dev/problems/{code}", "title": code, "status": status,
                       "code": code, "detail": detail, "hint": hint, "request_id": rid, **extra}).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
               (REQUEST_ID, rid.encode())]
    return body, headers


# Streaming uploads whose handler enforces its own, larger bound (image uploads: image_max_bytes).
STREAMING_UPLOAD_PATHS = frozenset({"/v1/images"})


def _nul_paths(value: Any, path: str) -> Iterator[str]:
    """Where in a parsed JSON document a string (or an object key) holds a NUL character."""
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            shown = k.replace("\x00", "\\u0000")  # the answer itself must not carry a NUL
            sub = f"{path}.{shown}" if path else shown
            if "\x00" in k:
                yield sub
            else:
                yield from _nul_paths(v, sub)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _nul_paths(v, f"{path}.{i}" if path else str(i))


def scope_content_type(scope: Scope) -> bytes:
    return dict(scope.get("headers") or []).get(b"content-type", b"").lower()


def nul_fields(scope: Scope, body: bytes) -> list[str]:
    """The request's fields (`query.name`, `path`, `body.labels.k`) whose value contains NUL."""
    found: list[str] = []
    if b"\x00" in unquote_to_bytes(scope.get("raw_path") or scope.get("path", "").encode()):
        found.append("path")
    qs = scope.get("query_string", b"")
    if b"%00" in qs or b"\x00" in qs:
        for name, value in parse_qsl(qs.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                found.append("query." + name.replace("\x00", "\\u0000"))
    if b"%00" in body and scope_content_type(scope).startswith(b"application/x-www-form-urlencoded"):
        for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                found.append("body." + name.replace("\x00", "\\u0000"))
    # JSON can only carry NUL escaped; a raw NUL byte makes the document invalid (a 400 later).
    if b"\\u0000" in body:
        try:
            doc = json.loads(body)
        except ValueError:
            return found
        found.extend("body." + p if p else "body" for p in _nul_paths(doc, ""))
    return found


class RequestLimits:
    def __init__(self, app: ASGIApp, max_body: int, exempt_paths: frozenset[str] = STREAMING_UPLOAD_PATHS) -> None:
        self.app = app
        self.max_body = max_body
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(REQUEST_ID, b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        send = self._with_id(send, rid)
        if scope.get("method") == "POST" and scope.get("path", "").rstrip("/") in self.exempt_paths:
            bad = nul_fields(scope, b"")
            if bad:
                await self._reject_nul(send, rid, bad)
                return
            await self.app(scope, receive, send)
            return
        limit = self.max_body
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._reject(send, rid, limit)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await self._reject(send, rid, limit)
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        bad = nul_fields(scope, body)
        if bad:
            await self._reject_nul(send, rid, bad)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    @staticmethod
    def _with_id(send: Send, rid: str) -> Send:
        """Exactly one X-Request-ID on every response, whatever the handler set."""

        async def _send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = [(k, v) for k, v in msg.get("headers", []) if k.lower() != REQUEST_ID]
                msg["headers"].append((REQUEST_ID, rid.encode()))
            await send(msg)

        return _send

    async def _reject(self, send: Send, rid: str, limit: int) -> None:
        body, headers = _problem(413, "request.too_large", f"the request body exceeds {limit} bytes",
                                 "send a smaller body; large uploads go to the dedicated upload endpoints", rid)
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _reject_nul(send: Send, rid: str, fields: list[str]) -> None:
        body, headers = _problem(
            422, "request.nul_character", f"NUL characters are not accepted: {', '.join(fields[:10])}",
            "remove the \\u0000 (NUL) characters from the named fields", rid,
            errors=[{"field": f, "message": "contains a NUL character", "type": "nul_character"} for f in fields])
        await send({"type": "http.response.start", "status": 422, "headers": headers})
        await send({"type": "http.response.body", "body": body})
