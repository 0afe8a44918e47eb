"""hostrequest.image nullable: a request names a catalogue image or none (the hosts keep their OS)

Requests naming a name outside the catalogue are refused now (`image.unknown`); one without an
image is stored with NULL rather than a made-up name. Existing rows keep their names.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hostrequest", schema=None) as batch_op:
        batch_op.alter_column("image", existing_type=sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)


def downgrade() -> None:
    # Requests without an image get an empty name back, as the old schema cannot hold NULL.
    op.execute(sa.text("UPDATE hostrequest SET image = '' WHERE image IS NULL"))
    with op.batch_alter_table("hostrequest", schema=None) as batch_op:
        batch_op.alter_column("image", existing_type=sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False)
