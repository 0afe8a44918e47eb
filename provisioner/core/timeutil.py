"""One clock for the whole service: timezone-aware UTC (SQLModel stores it the same way on SQLite and
PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else as_utc(dt).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(ts: str | None) -> datetime | None:
    return None if not ts else as_utc(datetime.fromisoformat(ts))


# The instants the service accepts from clients: years 1970 to 8999 as written. Anything the service
# adds to one (policy durations: at most ten years; lease extensions: at most ~114 years) or a
# timezone offset stays inside Python's calendar (years 1 to 9999) and PostgreSQL's timestamptz.
EARLIEST_YEAR = 1970
LATEST_YEAR = 8999
