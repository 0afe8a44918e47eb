"""Engine and sessions. SQLite gets WAL and a busy timeout so API threads and workers share it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, create_engine

from provisioner.store import (  # noqa: F401  (registers the tables)
    guardrail_models,
    image_models,
    migrate,
    models,
    notify_models,
    session_models,
)
from provisioner.store.config import Settings, get_settings

_engines: dict[str, Engine] = {}


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(eng, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return eng
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    url = settings.effective_database_url
    if url not in _engines:
        if url.startswith("sqlite"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        eng = make_engine(url)
        migrate.upgrade(eng)
        _engines[url] = eng
    return _engines[url]


def get_read_engine(settings: Settings | None = None) -> Engine:
    """The same pool in autocommit: single reads need no transaction around them."""
    settings = settings or get_settings()
    key = "read:" + settings.effective_database_url
    if key not in _engines:
        _engines[key] = get_engine(settings).execution_options(isolation_level="AUTOCOMMIT")
    return _engines[key]


def reset_engines() -> None:
    for key, eng in _engines.items():
        if not key.startswith("read:"):
            eng.dispose()
    _engines.clear()


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    with Session(get_engine(settings), expire_on_commit=False) as session:
        yield session
