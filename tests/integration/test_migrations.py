"""Schema migrations on SQLite and the real PostgreSQL: the migrations build exactly the models'
schema, a database from before migrations is adopted with its data, concurrent starts are safe."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import subprocess
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from provisioner.store.migrate import BASELINE, alembic_config, current, head, upgrade
from provisioner.store.models import Job, Tenant
from tests.integration.procs import BIN


@pytest.fixture
def engine(bare_engine: Engine) -> Engine:
    return bare_engine


def test_migrations_build_exactly_the_models_schema(engine: Engine) -> None:
    assert upgrade(engine) == head()
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == [], f"models and migrations differ (python -m provisioner.store.migrate revision '...'): {diff}"


def test_second_upgrade_is_a_no_op(engine: Engine) -> None:
    upgrade(engine)
    with Session(engine) as s:
        s.add(Tenant(name="kept"))
        s.commit()
    assert upgrade(engine) == head()
    with Session(engine) as s:
        assert [t.name for t in s.exec(select(Tenant)).all()] == ["kept"]


def test_database_from_before_migrations_is_adopted(engine: Engine) -> None:
    # What versions without migrations made with create_all: the baseline schema, no alembic_version.
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO tenant (name, quota, created_at) VALUES ('old', '{}', '2026-01-01')"))
        conn.execute(text("INSERT INTO host (name, address, port, ssh_user, connection, labels, pool, driver, state,"
                          " hardware, results, compliance, created_at, updated_at) VALUES ('h', '192.0.2.1', 22,"
                          " 'root', 'ssh', '{}', 'default', 'static', 'available', '{}', '{}', '{}',"
                          " '2026-01-01', '2026-01-01')"))
        conn.execute(text("INSERT INTO job (kind, host_id, status, attempts, max_attempts, accepted_at, queued_at,"
                          " cancel_requested, phases, params, event_count, sli, lease_until) VALUES ('provision',"
                          " 1, 'running', 1, 3, '2026-01-01', '2026-01-01', false, '[]', '{}', 0, '{}',"
                          " '2026-01-01 10:00:00')"))
    assert "alembic_version" not in inspect(engine).get_table_names()
    assert upgrade(engine) == head()
    with engine.connect() as conn:
        assert current(conn) == head()
    with Session(engine) as s:
        assert [t.name for t in s.exec(select(Tenant)).all()] == ["old"]
        # 0003: a worker's hold on a job is its claim; the value survives the rename.
        job = s.exec(select(Job)).one()
        assert job.claim_until is not None and job.claim_until.hour == 10 and job.error_code is None


def test_concurrent_starts_migrate_once(engine: Engine) -> None:
    # Threads of one process (serialised by a lock), then separate processes started together.
    with cf.ThreadPoolExecutor(3) as ex:
        assert list(ex.map(lambda _: upgrade(engine), range(3))) == [head()] * 3


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_processes_starting_together_migrate_once(request: pytest.FixtureRequest, tmp_path: Path, db: str) -> None:
    env = cli_env(tmp_path)
    if db == "postgresql":
        env["PROVISIONER_DATABASE_URL"] = request.getfixturevalue("pg_empty_url")
    procs = [subprocess.Popen([str(BIN / "provisioner"), "-o", "json", "admin", "migrate"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
    assert [json.loads(o)["after"] for o, _ in outs] == [head()] * 4
    # They raced on an empty database (each read the revision before migrating), and none failed.
    assert [json.loads(o)["before"] for o, _ in outs].count(None) >= 1


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["PROVISIONER_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_cli_migrate_reports_before_and_after(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    runs = [subprocess.run([str(BIN / "provisioner"), "-o", "json", "admin", "migrate"], env=env,
                           capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    first, second = (json.loads(r.stdout) for r in runs)
    assert first == {"before": None, "after": head(), "head": head()}
    assert second == {"before": head(), "after": head(), "head": head()}
