"""jobs and job events: the job store with its guardrails and the indexes of DESIGN.md

Revision ID: 0001
Revises:
Create Date: 2026-11-22 05:39:52.040808
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), server_default=sa.text("''::bytea"), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "waiting",
                "scheduled",
                "queued",
                "running",
                "succeeded",
                "dead",
                "cancelled",
                name="job_state",
            ),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("progress_percent", sa.Double(), server_default=sa.text("0"), nullable=False),
        sa.Column("progress_step", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("progress_message", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("progress_eta", sa.DateTime(timezone=True), nullable=True),
        sa.Column("progress_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.Column("executor", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "labels",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("timeout", sa.Interval(), nullable=True),
        sa.Column("event_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "(finished_at IS NOT NULL) = (state IN ('succeeded', 'dead', 'cancelled'))",
            name=op.f("ck_jobs_finished_iff_terminal"),
        ),
        sa.CheckConstraint("attempt <= max_attempts", name=op.f("ck_jobs_attempt_within_max")),
        sa.CheckConstraint("attempt >= 0", name=op.f("ck_jobs_attempt_non_negative")),
        sa.CheckConstraint("event_seq >= 0", name=op.f("ck_jobs_event_seq_non_negative")),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_jobs_max_attempts_positive")),
        sa.CheckConstraint("priority BETWEEN 0 AND 100", name=op.f("ck_jobs_priority_range")),
        sa.CheckConstraint(
            "progress_percent BETWEEN 0 AND 100", name=op.f("ck_jobs_progress_range")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint(
            "tenant", "idempotency_key", name=op.f("uq_jobs_tenant_idempotency_key")
        ),
    )
    op.create_index(
        "ix_jobs_active",
        "jobs",
        ["tenant", "created_at", "id"],
        unique=False,
        postgresql_where=sa.text("state IN ('waiting', 'scheduled', 'queued', 'running')"),
    )
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["queue", sa.literal_column("priority DESC"), "run_at", "id"],
        unique=False,
        postgresql_where=sa.text("state = 'queued'"),
    )
    op.create_index(
        "ix_jobs_history",
        "jobs",
        ["tenant", sa.literal_column("finished_at DESC"), sa.literal_column("id DESC")],
        unique=False,
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index(
        "ix_jobs_lease_expiry",
        "jobs",
        ["lease_expires_at"],
        unique=False,
        postgresql_where=sa.text("state = 'running'"),
    )
    op.create_index(
        "ix_jobs_running_executor",
        "jobs",
        ["executor"],
        unique=False,
        postgresql_where=sa.text("state = 'running'"),
    )
    op.create_index(
        "ix_jobs_scheduled_run_at",
        "jobs",
        ["run_at"],
        unique=False,
        postgresql_where=sa.text("state = 'scheduled'"),
    )
    op.create_index("ix_jobs_state_created_at", "jobs", ["state", "created_at"], unique=False)
    op.create_index(
        "ix_jobs_tenant_created_at", "jobs", ["tenant", "created_at", "id"], unique=False
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("job_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column(
            "from_state",
            sa.Enum(
                "waiting",
                "scheduled",
                "queued",
                "running",
                "succeeded",
                "dead",
                "cancelled",
                name="job_state",
            ),
            nullable=True,
        ),
        sa.Column(
            "to_state",
            sa.Enum(
                "waiting",
                "scheduled",
                "queued",
                "running",
                "succeeded",
                "dead",
                "cancelled",
                name="job_state",
            ),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("executor", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_job_events_seq_positive")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_events_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
        sa.UniqueConstraint("job_id", "seq", name=op.f("uq_job_events_job_id_seq")),
    )
    # History is append-only: rows are inserted with their transition and leave only together
    # with their job. The cascade from jobs runs inside PostgreSQL's foreign-key trigger, so
    # pg_trigger_depth() > 1 tells it apart from a direct DELETE, which is refused like UPDATE
    # and TRUNCATE.
    op.execute(
        """
        CREATE FUNCTION job_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND pg_trigger_depth() > 1 THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'job_events is append-only (% refused)', TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER job_events_append_only BEFORE UPDATE OR DELETE ON job_events "
        "FOR EACH ROW EXECUTE FUNCTION job_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER job_events_no_truncate BEFORE TRUNCATE ON job_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION job_events_append_only()"
    )


def downgrade() -> None:
    op.drop_table("job_events")
    op.execute("DROP FUNCTION job_events_append_only()")
    op.drop_index("ix_jobs_tenant_created_at", table_name="jobs")
    op.drop_index("ix_jobs_state_created_at", table_name="jobs")
    op.drop_index(
        "ix_jobs_scheduled_run_at",
        table_name="jobs",
        postgresql_where=sa.text("state = 'scheduled'"),
    )
    op.drop_index(
        "ix_jobs_running_executor", table_name="jobs", postgresql_where=sa.text("state = 'running'")
    )
    op.drop_index(
        "ix_jobs_lease_expiry", table_name="jobs", postgresql_where=sa.text("state = 'running'")
    )
    op.drop_index(
        "ix_jobs_history", table_name="jobs", postgresql_where=sa.text("finished_at IS NOT NULL")
    )
    op.drop_index("ix_jobs_claim", table_name="jobs", postgresql_where=sa.text("state = 'queued'"))
    op.drop_index(
        "ix_jobs_active",
        table_name="jobs",
        postgresql_where=sa.text("state IN ('waiting', 'scheduled', 'queued', 'running')"),
    )
    op.drop_table("jobs")
    sa.Enum(name="job_state").drop(op.get_bind())
