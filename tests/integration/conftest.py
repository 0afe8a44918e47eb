from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from provisioner.store.db import make_engine
from tests.integration.harness import World, base_env, running_app
from tests.integration.sshd import Sshd


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The service in-process with its worker threads, on SQLite and on the real PostgreSQL."""
    db = None
    if request.param == "postgresql":
        db = request.getfixturevalue("pg_url")
    with running_app(base_env(tmp_path, db)) as w:
        yield w


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    with running_app(base_env(tmp_path)) as w:
        yield w


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty database (no schema yet), SQLite and the real PostgreSQL."""
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_empty_url").replace("postgresql://", "postgresql+psycopg://")
    eng = make_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real OpenSSH server on 127.0.0.1 with its own host key, root login with a test key."""
    server = Sshd(tmp_path / "sshd")
    yield server
    server.stop()
