"""orchestration: job dependencies (with a pending counter), queue pause and concurrency limits,
cron schedules and their fires (one row per schedule and fire time: each fire happens once)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 09:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Dependencies not yet succeeded; a WAITING job becomes QUEUED (or SCHEDULED) at 0.
    op.add_column(
        "jobs",
        sa.Column(
            "pending_dependencies", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.create_check_constraint(
        op.f("ck_jobs_pending_dependencies_non_negative"), "jobs", "pending_dependencies >= 0"
    )
    op.create_table(
        "job_dependencies",
        sa.Column("job_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("depends_on", sa.UUID(as_uuid=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_dependencies_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["depends_on"],
            ["jobs.id"],
            name=op.f("fk_job_dependencies_depends_on_jobs"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("job_id <> depends_on", name=op.f("ck_job_dependencies_not_self")),
        sa.PrimaryKeyConstraint("job_id", "depends_on", name=op.f("pk_job_dependencies")),
    )
    # The dependents of a job that just finished: an indexed lookup, never a scan.
    op.create_index(
        "ix_job_dependencies_depends_on", "job_dependencies", ["depends_on"], unique=False
    )

    op.add_column(
        "queues",
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("queues", sa.Column("max_concurrency", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_queues_max_concurrency_positive"),
        "queues",
        "max_concurrency IS NULL OR max_concurrency >= 1",
    )

    op.create_table(
        "schedules",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("cron", sa.Text(), nullable=False),
        sa.Column("time_zone", sa.Text(), nullable=False),
        # The validated JobSpec template (serialised jobsched.v1.JobSpec).
        sa.Column("job_template", sa.LargeBinary(), nullable=False),
        sa.Column("overlap_policy", sa.Text(), nullable=False),
        sa.Column("catchup_policy", sa.Text(), nullable=False),
        sa.Column("catchup_window", postgresql.INTERVAL(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        # The next fire time not yet handled (UTC); the leader fires what is due.
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_job_id", sa.UUID(as_uuid=False), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "overlap_policy IN ('allow', 'skip', 'cancel_previous')",
            name=op.f("ck_schedules_overlap_policy_known"),
        ),
        sa.CheckConstraint(
            "catchup_policy IN ('none', 'latest', 'all')",
            name=op.f("ck_schedules_catchup_policy_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_schedules_tenant_name")),
    )
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_fire_at"],
        unique=False,
        postgresql_where=sa.text("NOT paused"),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("schedule_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.UUID(as_uuid=False), nullable=True),  # NULL: skipped
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_fires_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "outcome IN ('submitted', 'skipped', 'triggered')",
            name=op.f("ck_schedule_fires_outcome_known"),
        ),
        sa.PrimaryKeyConstraint("schedule_id", "fire_time", name=op.f("pk_schedule_fires")),
    )


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_index(
        "ix_schedules_due", table_name="schedules", postgresql_where=sa.text("NOT paused")
    )
    op.drop_table("schedules")
    op.drop_constraint(op.f("ck_queues_max_concurrency_positive"), "queues", type_="check")
    op.drop_column("queues", "max_concurrency")
    op.drop_column("queues", "paused")
    op.drop_index("ix_job_dependencies_depends_on", table_name="job_dependencies")
    op.drop_table("job_dependencies")
    op.drop_constraint(op.f("ck_jobs_pending_dependencies_non_negative"), "jobs", type_="check")
    op.drop_column("jobs", "pending_dependencies")
