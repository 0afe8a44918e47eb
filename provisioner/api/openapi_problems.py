"""The OpenAPI description says what the service really answers: FastAPI documents only the success
response and a 422 as `application/json`, while every error is an RFC 9457 problem document
(`api/problems.py`, `api/limits.py`). This post-processing step adds the problem responses to every
operation of every router, present and future, so no route has to list them itself:

- 413 (body too large) where the operation takes a body;
- 401 and 403 where it authenticates (FastAPI marks those with the bearer security scheme that
  `deps.authenticate` depends on) or takes an Authorization header (image tokens);
- 400 (malformed JSON or Range), 404, 409, 422 (schema or rule), 500 and 503 everywhere (the
  error table's families).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from provisioner.api.openapi_strings import describe_strings

PROBLEM_MEDIA = "application/problem+json"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem document; `code` is stable and machine-readable",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string", "description": "e.g. request.invalid, host.not_found"},
        "detail": {"type": "string"},
        "hint": {"type": "string", "description": "what to do about it"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "message": {"type": "string"}, "type": {"type": "string"}}}},
    },
    # Problems of some families carry more members (violations, limit, permission, ...).
    "additionalProperties": True,
}

DESCRIPTIONS = {
    "400": "malformed request (body not JSON, bad Range header)",
    "401": "no, malformed, revoked or expired API token",
    "403": "the token's role may not do this",
    "404": "no such object, or not visible to the caller",
    "409": "the object's state does not allow this now",
    "413": "request body too large",
    "422": "invalid input: schema (`request.invalid`, with `errors`), NUL characters, or a rule of the service",
    "500": "unexpected error; nothing was changed",
    "503": "a dependency (the database) is unavailable; retry after Retry-After seconds",
}
ALWAYS = ("400", "404", "409", "422", "500", "503")
WITH_BODY = ("413",)
WITH_AUTH = ("401", "403")


PROBLEM_CONTENT = {PROBLEM_MEDIA: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _problem_response(status: str) -> dict[str, Any]:
    return {"description": DESCRIPTIONS[status], "content": PROBLEM_CONTENT}


def add_problem_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Adds the problem responses to every operation of an OpenAPI document (in place)."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    # Replaced by Problem everywhere; FastAPI's shapes are never sent.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            statuses = list(ALWAYS)
            if "requestBody" in op:
                statuses += WITH_BODY
            # FastAPI sets `security` for operations that depend on deps.authenticate; the image
            # bytes take a per-job token in the Authorization header instead.
            if op.get("security") or any(p.get("in") == "header" and p.get("name", "").lower() == "authorization"
                                         for p in op.get("parameters", [])):
                statuses += WITH_AUTH
            for status in sorted(statuses):
                op["responses"][status] = _problem_response(status)
            # A route's own errors (the 416 of a Range) are problem documents too.
            for status, resp in op["responses"].items():
                if status[0] in "45" and "content" not in resp:
                    resp["content"] = PROBLEM_CONTENT
    return schema


def install(app: FastAPI) -> None:
    """Makes `app.openapi()` (and /openapi.json, /docs) describe the problem responses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes, tags=app.openapi_tags, servers=app.servers)
            app.openapi_schema = describe_strings(add_problem_responses(schema))
        return app.openapi_schema

    app_openapi: Callable[[], dict[str, Any]] = openapi
    app.openapi = app_openapi  # type: ignore[method-assign]
