"""host.bmc_url, host.bmc_cert_sha256, host.bmc_credential_ciphertext: hosts enrolled by their Redfish BMC

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("host") as batch:
        batch.add_column(sa.Column("bmc_url", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))
        batch.add_column(sa.Column("bmc_cert_sha256", sqlmodel.sql.sqltypes.AutoString(length=95), nullable=True))
        batch.add_column(sa.Column("bmc_credential_ciphertext", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("host") as batch:
        batch.drop_column("bmc_credential_ciphertext")
        batch.drop_column("bmc_cert_sha256")
        batch.drop_column("bmc_url")
