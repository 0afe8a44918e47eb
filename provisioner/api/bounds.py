"""Bounded parameter and field types shared by every route: what a route takes from a client must
fit the column it is compared with or stored in, so the database never sees a value it cannot hold
(PostgreSQL INTEGER, the calendar, label maps that become one SQL expression each).

A new route gets the protections by typing its inputs with these (`host_id: PathId`,
`request_id: IdFilter = None`, `expires_at: Instant | None`); tests/integration/test_openapi_bounds.py
fails for an integer without a maximum, a string without a maxLength, or a map without
maxProperties in any request of the OpenAPI description."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BeforeValidator, Field, WithJsonSchema

from provisioner.core.timeutil import EARLIEST_YEAR, LATEST_YEAR
from provisioner.store.column_ranges import INT_COLUMN_MAX

ID_DESCRIPTION = f"an id the service gave out (1 to {INT_COLUMN_MAX})"

# An object's id in the URL path: `/v1/hosts/{host_id}`.
PathId = Annotated[int, Path(ge=1, le=INT_COLUMN_MAX, description=ID_DESCRIPTION)]
# An optional id filter in the query: `?host_id=`.
IdFilter = Annotated[int | None, Query(ge=1, le=INT_COLUMN_MAX, description=ID_DESCRIPTION)]
# A position in a sequence (event numbers): `?after_seq=`.
SeqQuery = Annotated[int, Query(ge=0, le=INT_COLUMN_MAX)]
# An id in a request body: `"tenant_id": 3`.
BodyId = Annotated[int, Field(ge=1, le=INT_COLUMN_MAX, description=ID_DESCRIPTION)]

# Label maps: each label of a request's constraints is one JSON comparison in the allocation query
# (5,000 made SQLite give up on the statement); hosts carry a few dozen at most.
MAX_HOST_LABELS = 64
MAX_CONSTRAINT_LABELS = 16
# Pools named in one quota.
MAX_POOLS = 256

# ISO 8601 only (no Unix timestamps), years EARLIEST_YEAR..LATEST_YEAR as written.
INSTANT_PATTERN = r"^(19[7-9][0-9]|[2-8][0-9]{3})-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}[^\x00]*$"
_INSTANT_RE = re.compile(INSTANT_PATTERN)
INSTANT_MAX_LENGTH = 64
assert EARLIEST_YEAR == 1970 and LATEST_YEAR == 8999, "INSTANT_PATTERN spells these years out"


def _iso_instant(v: Any) -> Any:
    if isinstance(v, datetime):
        return v
    if not isinstance(v, str) or len(v) > INSTANT_MAX_LENGTH or not _INSTANT_RE.match(v):
        raise ValueError(f"must be an ISO 8601 date-time in the years {EARLIEST_YEAR}-{LATEST_YEAR}, "
                         "e.g. 2027-01-31T12:00:00Z")
    return v


Instant = Annotated[
    datetime,
    BeforeValidator(_iso_instant),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": INSTANT_PATTERN,
                    "maxLength": INSTANT_MAX_LENGTH,
                    "description": f"ISO 8601 date-time, years {EARLIEST_YEAR}-{LATEST_YEAR}"}),
]


def _not_bool(v: Any) -> Any:
    # JSON Schema's integer admits 954.0 but not true: pydantic's lax int takes both, so refuse bools.
    if isinstance(v, bool):
        raise ValueError("must be an integer, not a boolean")
    return v


# A host count in a quota (0..100,000).
QuotaCount = Annotated[int, Field(ge=0, le=100_000), BeforeValidator(_not_bool)]

# A report's period: long enough for a quarter's review, bounded so a scan stays cheap.
PeriodDays = Annotated[float | None, Query(gt=0, le=400, description="length of the period in days")]
