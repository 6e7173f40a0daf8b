"""The predictions table.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("image_index", sa.Integer, nullable=False),
        sa.Column("client_id", sa.String(128), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("file_name", sa.String(512), nullable=True),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("model_id", sa.String(512), nullable=False),
        sa.Column("model_revision", sa.String(64), nullable=True),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("uncertain", sa.Boolean, nullable=False),
        sa.Column("decision_threshold", sa.Float, nullable=False),
        sa.Column("authenticity", sa.JSON, nullable=False),
        sa.Column("objects", sa.JSON, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("stored_image", sa.String(1024), nullable=True),
    )
    for column in ("created_at", "request_id", "sha256", "model_id", "label"):
        op.create_index(f"ix_predictions_{column}", "predictions", [column])


def downgrade() -> None:
    op.drop_table("predictions")
