"""job logs: the log lines of each attempt, at most 1000 (+ a truncation marker) per attempt

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:12:31.418205
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_logs",
        sa.Column("job_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("attempt >= 1", name=op.f("ck_job_logs_attempt_positive")),
        sa.CheckConstraint("line_number >= 1", name=op.f("ck_job_logs_line_number_positive")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_logs_job_id_jobs"), ondelete="CASCADE"
        ),
        # Also the index of every read: a job's lines by attempt, then line number.
        sa.PrimaryKeyConstraint("job_id", "attempt", "line_number", name=op.f("pk_job_logs")),
    )


def downgrade() -> None:
    op.drop_table("job_logs")
