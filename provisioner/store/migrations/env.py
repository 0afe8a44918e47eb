"""Alembic environment: run with the connection provisioner.store.migrate hands over (never from an ini
file), against every table the models register."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import provisioner.store.db  # noqa: F401  (registers every table on SQLModel.metadata)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite can't ALTER most things: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
