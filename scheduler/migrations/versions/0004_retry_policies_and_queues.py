"""retry policies and queue settings: each job keeps its retry policy (its own fields, completed
by its queue's defaults, then the global defaults, at submit), and queues keep their defaults

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 09:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults: PostgreSQL adds these columns without rewriting the table.
    op.add_column(
        "jobs",
        sa.Column(
            "retry_initial_backoff",
            postgresql.INTERVAL(),
            server_default=sa.text("'00:00:01'::interval"),
            nullable=False,
        ),
    )
    op.add_column(
        "jobs",
        sa.Column("retry_multiplier", sa.Double(), server_default=sa.text("2.0"), nullable=False),
    )
    op.add_column(
        "jobs",
        sa.Column(
            "retry_max_backoff",
            postgresql.INTERVAL(),
            server_default=sa.text("'00:10:00'::interval"),
            nullable=False,
        ),
    )
    op.add_column(
        "jobs",
        sa.Column("retry_jitter", sa.Double(), server_default=sa.text("0.1"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_jobs_retry_policy_valid"),
        "jobs",
        "retry_initial_backoff > interval '0' AND retry_max_backoff >= retry_initial_backoff "
        "AND retry_multiplier >= 1 AND retry_jitter >= 0 AND retry_jitter <= 1",
    )
    op.create_table(
        "queues",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("default_max_attempts", sa.Integer(), nullable=True),
        sa.Column("default_timeout", postgresql.INTERVAL(), nullable=True),
        sa.Column("retry_initial_backoff", postgresql.INTERVAL(), nullable=True),
        sa.Column("retry_multiplier", sa.Double(), nullable=True),
        sa.Column("retry_max_backoff", postgresql.INTERVAL(), nullable=True),
        sa.Column("retry_jitter", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "default_max_attempts IS NULL OR default_max_attempts BETWEEN 1 AND 100",
            name=op.f("ck_queues_default_max_attempts_range"),
        ),
        sa.PrimaryKeyConstraint("tenant", "name", name=op.f("pk_queues")),
    )


def downgrade() -> None:
    op.drop_table("queues")
    op.drop_constraint(op.f("ck_jobs_retry_policy_valid"), "jobs", type_="check")
    for column in (
        "retry_jitter",
        "retry_max_backoff",
        "retry_multiplier",
        "retry_initial_backoff",
    ):
        op.drop_column("jobs", column)
