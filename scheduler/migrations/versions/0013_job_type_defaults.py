"""job type defaults: settings per job type (max attempts, timeout, retry policy) between the
job's own values and its queue's, and where each of a job's settings came from

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 18:30:00.000000

`job_types (tenant, name)`: one row per configured type (JobTypeService.UpdateJobType); NULL
settings inherit. Read by the submit INSERT only (one more LEFT JOIN on the primary key), never
by the claim: defaults are resolved once, at submit, and stored on the job, as a queue's are.

`jobs.setting_sources`: one letter per setting (j job, t type, q queue, d default) in the order
of scheduler/domain/setting_sources.py SETTINGS; NULL for the jobs stored before this
migration, whose origins were not recorded. Adding a nullable column without a default
rewrites nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_types",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=True),
        sa.Column("timeout", postgresql.INTERVAL(), nullable=True),
        sa.Column("retry_initial_backoff", postgresql.INTERVAL(), nullable=True),
        sa.Column("retry_multiplier", sa.Double(), nullable=True),
        sa.Column("retry_max_backoff", postgresql.INTERVAL(), nullable=True),
        sa.Column("retry_jitter", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "max_attempts IS NULL OR max_attempts BETWEEN 1 AND 100",
            name=op.f("ck_job_types_max_attempts_range"),
        ),
        sa.CheckConstraint(
            "timeout IS NULL OR timeout > interval '0'", name=op.f("ck_job_types_timeout_positive")
        ),
        sa.CheckConstraint(
            "(retry_initial_backoff IS NULL OR retry_initial_backoff > interval '0') "
            "AND (retry_multiplier IS NULL OR retry_multiplier >= 1) "
            "AND (retry_max_backoff IS NULL OR retry_max_backoff > interval '0') "
            "AND (retry_jitter IS NULL OR retry_jitter BETWEEN 0 AND 1)",
            name=op.f("ck_job_types_retry_policy_valid"),
        ),
        sa.PrimaryKeyConstraint("tenant", "name", name=op.f("pk_job_types")),
    )
    op.add_column("jobs", sa.Column("setting_sources", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_jobs_setting_sources_known"),
        "jobs",
        "setting_sources IS NULL OR setting_sources ~ '^[jtqd]{6}$'",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_jobs_setting_sources_known"), "jobs", type_="check")
    op.drop_column("jobs", "setting_sources")
    op.drop_table("job_types")
