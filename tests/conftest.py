"""Shared fixtures: real PostgreSQL and Redis (started by scripts/services.sh), fresh databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_BASE = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def pg_admin() -> str:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=5) as c:
            c.execute("select 1")
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN} ({exc}); run scripts/services.sh")
    return PG_ADMIN


def create_database(pg_admin: str, prefix: str, template: str | None = None) -> str:
    """A new database with a unique name (so parallel test processes never share one), copied from
    `template` if given. Its sessions commit without waiting for the WAL flush (synchronous_commit
    off): nothing a test checks depends on a commit surviving a crash of the shared server, and each
    commit then costs no fsync. The test's own cluster (private_pg.py) is the place for crashes."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        c.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    return name


def drop_database(pg_admin: str, name: str) -> None:
    with psycopg.connect(pg_admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_empty_url(pg_admin: str) -> Iterator[str]:
    """A fresh, empty database per test (no schema: the code under test migrates it), dropped afterwards."""
    name = create_database(pg_admin, "prov")
    yield f"{PG_BASE}/{name}"
    from provisioner.store.db import reset_engines

    reset_engines()
    drop_database(pg_admin, name)


@pytest.fixture(scope="session")
def pg_template(pg_admin: str) -> Iterator[str]:
    """A database at the newest migration, made once per test process, for `pg_url` to copy."""
    from provisioner.store.db import make_engine
    from provisioner.store.migrate import upgrade

    name = create_database(pg_admin, "prov_tmpl")
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()  # CREATE DATABASE ... TEMPLATE needs the template without sessions
    yield name
    drop_database(pg_admin, name)


@pytest.fixture
def pg_url(pg_admin: str, pg_template: str) -> Iterator[str]:
    """A fresh database per test already at the newest migration (a copy of `pg_template`: ~0.3 s
    instead of ~1.5-2 s of DDL for each test), dropped afterwards. The processes that open it still
    run their migration check and find nothing to do; migrating an empty database is what
    `pg_empty_url` (tests/integration/test_migrations.py, bare_engine) is for."""
    name = create_database(pg_admin, "prov", template=pg_template)
    yield f"{PG_BASE}/{name}"
    from provisioner.store.db import reset_engines

    reset_engines()
    drop_database(pg_admin, name)


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); run scripts/services.sh")
    return REDIS_URL
