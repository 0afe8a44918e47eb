"""host.host_key, host.host_key_pinned_at: the pinned SSH host key

Hosts enrolled before keys were pinned get none; their jobs fail with host.key_unpinned until an
operator re-pins them (`provisioner hosts repin ID`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("host") as batch:
        batch.add_column(sa.Column("host_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("host_key_pinned_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("host") as batch:
        batch.drop_column("host_key_pinned_at")
        batch.drop_column("host_key")
