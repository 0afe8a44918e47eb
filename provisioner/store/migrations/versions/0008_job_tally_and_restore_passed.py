"""job.restore_passed and the jobtally table (running totals behind /metrics)

/metrics reported gauges recomputed by GROUP BY over the whole job table; job and phase duration
histograms from the rows would cost a scan of every job's phases per scrape. settle() now adds each
job's observations to jobtally in its own transaction. Totals start at zero on upgrade (Prometheus
sees new series); the SLO report reads the job rows and is complete from the first day.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("restore_passed", sa.Boolean(), nullable=True))
    op.create_table(
        "jobtally",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("metric", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("phase", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("le", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("metric", "kind", "phase", "status", "reason", "le", name="uq_jobtally_series"),
    )


def downgrade() -> None:
    op.drop_table("jobtally")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("restore_passed")
