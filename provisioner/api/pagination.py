"""Limit/offset pagination with bounds, shared by every list endpoint.

`total` is counted up to COUNT_CAP items: counting every row of a large table on each page view
cost more than fetching the page (a customer with 50,000 jobs: ~6 ms of database time per listing).
Beyond the cap, `total` is COUNT_CAP and `total_exact` is false; filters narrow the count, and exact
fleet-wide numbers are on /metrics and /v1/compliance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query
from sqlalchemy import func, literal
from sqlmodel import Session, select

COUNT_CAP = 1000


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


async def page_params(  # async: a sync dependency costs a thread-pool hop per request

    limit: Annotated[int, Query(ge=1, le=500, description="items per page (1-500)")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="items to skip")] = 0,
) -> PageParams:
    return PageParams(limit, offset)


def page_meta(session: Session, query: Any, pg: PageParams) -> dict[str, Any]:
    """total / total_exact / limit / offset for `query` (a SELECT with the list's filters)."""
    probe = query.with_only_columns(literal(1), maintain_column_froms=True).limit(COUNT_CAP + 1).subquery()
    n = session.exec(select(func.count()).select_from(probe)).one()
    return {"total": min(n, COUNT_CAP), "total_exact": n <= COUNT_CAP, "limit": pg.limit, "offset": pg.offset}


# Paging of a list route, as a parameter type: `pg: Paging`.
Paging = Annotated[PageParams, Depends(page_params)]
