"""jobs.lease_until becomes jobs.claim_until; jobs.error_code

"Lease" is the customer's hold on a host; a worker's hold on a job is its claim. error_code carries
a phase's machine-readable failure (e.g. the image writer's image_corrupt) so nothing has to match
substrings of the error text.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.alter_column("lease_until", new_column_name="claim_until")
        batch.add_column(sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("error_code")
        batch.alter_column("claim_until", new_column_name="lease_until")
