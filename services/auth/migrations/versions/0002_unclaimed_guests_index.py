"""an index for the sweeper: unclaimed guests by expiry

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-20 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_guests_unclaimed_expires_at",
        "guests",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("claimed_by IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_guests_unclaimed_expires_at", table_name="guests")
