"""ASGI middleware: a request id on every request, and a hard bound on body size (also when
chunked), answered as problem+json before the handler sees anything."""

from __future__ import annotations

import json
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(Exception):
    pass


def _problem(status: int, code: str, detail: str, hint: str, rid: str) -> tuple[bytes, list]:
    body = json.dumps({"type": f"https://provisioner.dev/problems/{code}", "title": code, "status": status,
                       "code": code, "detail": detail, "hint": hint, "request_id": rid}).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", rid.encode())]
    return body, headers


# Streaming uploads whose handler enforces its own, larger bound (image uploads: image_max_bytes).
STREAMING_UPLOAD_PATHS = frozenset({"/v1/images"})


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
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        if scope.get("method") == "POST" and scope.get("path", "").rstrip("/") in self.exempt_paths:
            await self.app(scope, receive, self._with_id(send, rid))
            return
        limit = self.max_body
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._reject(send, rid, limit)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return msg

        async def send_with_id(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                msg.setdefault("headers", [])
                msg["headers"] = [*msg["headers"], (b"x-request-id", rid.encode())]
            await send(msg)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _TooLarge:
            if not started:
                await self._reject(send, rid, limit)

    @staticmethod
    def _with_id(send: Send, rid: str) -> Send:
        async def _send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = [*msg.get("headers", []), (b"x-request-id", rid.encode())]
            await send(msg)

        return _send

    async def _reject(self, send: Send, rid: str, limit: int) -> None:
        body, headers = _problem(413, "request.too_large", f"the request body exceeds {limit} bytes",
                                 "send a smaller body; large uploads go to the dedicated upload endpoints", rid)
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


