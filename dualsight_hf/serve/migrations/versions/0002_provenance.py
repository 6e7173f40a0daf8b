"""Provenance evidence beside each decision, and what decided it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as table:  # batch mode: SQLite rebuilds the table, PostgreSQL alters it
        table.add_column(sa.Column("provenance", sa.JSON, nullable=True))
        table.add_column(sa.Column("decided_by", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as table:
        table.drop_column("decided_by")
        table.drop_column("provenance")
