"""bulk ingestion: a batch's source, cursor and counts; jobs found by content

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 11:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("ingest_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("ingest_cursor", sa.Text(), nullable=True))
        for name in ("ingest_submitted", "ingest_skipped", "ingest_failed"):
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("ingest_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("ingest_updated_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_batches_ingest", ["ingest_state", "ingest_updated_at"], unique=False
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_tenant_sha256", ["tenant", "content_sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_sha256")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_ingest")
        for name in (
            "ingest_updated_at",
            "ingest_error",
            "ingest_failed",
            "ingest_skipped",
            "ingest_submitted",
            "ingest_cursor",
            "ingest_state",
            "source",
        ):
            batch_op.drop_column(name)
