"""RFC 9457 problem documents: every error the API returns is one, with a stable code and a hint."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from provisioner.api.error_table import status_for
from provisioner.core.errors import DomainError

log = logging.getLogger("provisioner.api")

PROBLEM_TYPE_BASE = "https://provisioner.dev/problems/"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        hint: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ").replace(".", ": ")
        self.hint = hint
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.hint:
            doc["hint"] = self.hint
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


def problem_for(exc: DomainError) -> Problem:
    """A service's refusal as the problem document its family maps to (`error_table.STATUS`)."""
    return Problem(status_for(exc), exc.code, exc.detail, hint=exc.hint, **exc.extra)


def not_found(kind: str, ident: object) -> Problem:
    return Problem(404, f"{kind}.not_found", f"{kind} {ident} does not exist or is not visible to you",
                   hint=f"list the {kind}s you can see with GET /v1/{kind}s")


def problem_response(p: Problem, request: Request | None = None,
                     headers: Mapping[str, str] | None = None) -> JSONResponse:
    # X-Request-ID is set on every response by the RequestLimits middleware (once).
    rid = getattr(request.state, "request_id", None) if request is not None else None
    body = p.body(str(request.url.path) if request is not None else None)
    if rid:
        body["request_id"] = rid
    return JSONResponse(body, status_code=p.status, media_type="application/problem+json", headers=headers)


# SQLite's OperationalError is also what it raises for statements that can never run (an expression
# tree too deep, too many variables); only these messages mean another try may succeed.
SQLITE_TRANSIENT = ("database is locked", "database table is locked", "unable to open database", "disk i/o error",
                    "database or disk is full")


def retry_can_help(exc: OperationalError) -> bool:
    if isinstance(exc.orig, sqlite3.OperationalError):
        msg = str(exc.orig).lower()
        return any(m in msg for m in SQLITE_TRANSIENT)
    return True  # PostgreSQL: psycopg's OperationalError is the connection or the server going away


def allowed_methods(openapi: dict[str, Any], path: str) -> list[str]:
    """The methods the OpenAPI description lists for a concrete path (HEAD wherever GET is)."""
    methods: set[str] = set()
    for template, item in openapi.get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods.update(m.upper() for m in item if m in HTTP_METHODS)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _loc(loc: tuple | list) -> str:
    return ".".join(str(x) for x in loc if x not in ("body",)) or "body"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return problem_response(problem_for(exc), request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _loc(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            p = Problem(400, "request.malformed_json", "the request body is not valid JSON",
                        hint="send a JSON object with Content-Type: application/json", errors=errors)
        else:
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
            p = Problem(422, "request.invalid", f"the request is invalid: {summary}",
                        hint="fix the listed fields; GET /docs shows the schema", errors=errors)
        return problem_response(p, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "route.not_found", 405: "method.not_allowed", 401: "auth.required"}
        code = codes.get(exc.status_code, f"http.{exc.status_code}")
        hint = "see GET /docs for the API's routes" if exc.status_code in (404, 405) else None
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's Allow names only the first route matching the path; FastAPI has one route
            # per method, so the description's path item is the whole answer.
            headers["Allow"] = ", ".join(allowed_methods(request.app.openapi(), request.url.path)) or \
                headers.get("Allow", "")
        return problem_response(Problem(exc.status_code, code, str(exc.detail), hint=hint), request,
                                headers=headers)

    @app.exception_handler(DataError)
    async def _out_of_range(request: Request, exc: DataError) -> JSONResponse:
        # The last line behind the bounded parameter types (`api/bounds.py`): a value the database's
        # column cannot hold is the client's input, not our bug; the transaction was rolled back.
        log.warning("database refused a value on %s %s: %s", request.method, request.url.path, exc.orig)
        return problem_response(
            Problem(422, "request.out_of_range", "a value in the request is outside what the service can store",
                    hint="use ids and numbers from the service's own answers, dates between 1970 and 9000, "
                    "text without NUL characters"),
            request,
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, OperationalError) and not retry_can_help(exc):
            return await _unexpected(request, exc)
        # Connection refused or lost, pool exhausted, SQLite busy: the client should retry, not
        # report a bug. The transaction was rolled back unless the database vanished mid-commit.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        resp = problem_response(
            Problem(503, "database.unavailable", "the service cannot reach its database right now",
                    hint="retry in a few seconds; if a create failed this way, list before re-creating"),
            request,
        )
        resp.headers["Retry-After"] = "5"
        return resp

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            Problem(500, "internal.error", "the service hit an unexpected error; nothing was changed",
                    hint="retry; if it persists, give the request_id to an operator"),
            request,
        )
