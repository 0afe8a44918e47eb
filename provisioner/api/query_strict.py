"""Unknown or repeated query parameters are refused, like unknown body fields (`schemas.Strict`):
`?stat=failed` (a typo of `status`) or `?name=a&name=b` would otherwise be ignored silently and
answer a list the client did not ask for. An app-wide dependency, so every route has it."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from provisioner.api.problems import Problem


def _query_fields(dep: Dependant) -> list:
    return [*dep.query_params, *(f for sub in dep.dependencies for f in _query_fields(sub))]


def _declared(route: APIRoute) -> tuple[frozenset[str], frozenset[str]]:
    """The route's query parameter names, and those of them that take several values (lists)."""
    cached = getattr(route, "_query_names", None)
    if cached is None:
        params = _query_fields(route.dependant)
        names = frozenset(p.alias for p in params)
        lists = frozenset(p.alias for p in params if "list" in str(p.field_info.annotation).lower())
        cached = (names, lists)
        route._query_names = cached  # type: ignore[attr-defined]
    return cached


async def refuse_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.url.query:
        return
    names, lists = _declared(route)
    seen: set[str] = set()
    errors = []
    for key, _ in request.query_params.multi_items():
        if key not in names:
            errors.append({"field": f"query.{key}", "message": "unknown query parameter", "type": "extra_forbidden"})
        elif key in seen and key not in lists:
            errors.append({"field": f"query.{key}", "message": "given more than once", "type": "repeated"})
        seen.add(key)
    if errors:
        known = ", ".join(sorted(names)) or "none"
        raise Problem(422, "request.invalid",
                      "the request is invalid: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10]),
                      hint=f"this route's query parameters: {known} (each at most once); GET /docs shows them",
                      errors=errors)
