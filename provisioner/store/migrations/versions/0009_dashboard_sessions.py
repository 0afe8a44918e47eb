"""dashboardsession: server-side dashboard sessions (the cookie holds a random id, the table its hash)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dashboardsession",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["apitoken.token_id"]),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dashboardsession") as batch:
        batch.create_index(batch.f("ix_dashboardsession_session_hash"), ["session_hash"], unique=True)
        batch.create_index(batch.f("ix_dashboardsession_token_id"), ["token_id"], unique=False)
        batch.create_index(batch.f("ix_dashboardsession_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dashboardsession") as batch:
        batch.drop_index(batch.f("ix_dashboardsession_user_id"))
        batch.drop_index(batch.f("ix_dashboardsession_token_id"))
        batch.drop_index(batch.f("ix_dashboardsession_session_hash"))
    op.drop_table("dashboardsession")
