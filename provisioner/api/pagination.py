"""Limit/offset pagination with bounds, shared by every list endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Query


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


def page_params(
    limit: int = Query(50, ge=1, le=500, description="items per page (1-500)"),
    offset: int = Query(0, ge=0, le=10_000_000, description="items to skip"),
) -> PageParams:
    return PageParams(limit, offset)
