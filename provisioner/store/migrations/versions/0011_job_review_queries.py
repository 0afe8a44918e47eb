"""job.finished_at indexed, job.phases as JSONB on PostgreSQL: the SLO report and the service review

Both count a period's finished jobs in SQL (`finished_at > start AND finished_at <= end`, GROUP BY);
the phase SLOs read one phase's record out of each job's phases. As json every row was parsed again
on each query (a jsonb cast of 20,000 provision jobs' phases: ~1 s on a loaded machine); as jsonb it
is stored parsed. SQLite keeps its JSON text. Upgrading rewrites the job table once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_finished_at", "job", ["finished_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("job", "phases", type_=postgresql.JSONB(), existing_type=sa.JSON(), existing_nullable=True,
                        postgresql_using="phases::jsonb")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("job", "phases", type_=sa.JSON(), existing_type=postgresql.JSONB(), existing_nullable=True,
                        postgresql_using="phases::json")
    op.drop_index("ix_job_finished_at", table_name="job")
