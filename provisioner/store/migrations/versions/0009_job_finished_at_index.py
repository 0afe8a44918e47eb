"""an index on job.finished_at for the service review and the SLO report

Both count the jobs that finished in a period (`finished_at > start AND finished_at <= end`) with
GROUP BY in the database; a period shorter than the history reads only its part of the table.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_finished_at", "job", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_job_finished_at", table_name="job")
