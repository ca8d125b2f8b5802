"""audit events: who changed what, and every refused credential or permission (append-only)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 01:00:00.000000

`audit_events`: one row per mutating call (cancel, retry, delete, priority, queue, schedule and
job-type changes, key creation and revocation) and per authentication or authorization failure
of any call (scheduler/auth/audit_table.py says which). Append-only: a trigger refuses UPDATE
and TRUNCATE, and any DELETE except the retention sweep's, which names its cutoff in the
transaction-local setting `jobsched.audit_cutoff` and may delete only rows older than it. A
new, empty table: nothing to rewrite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("principal_name", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("peer", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "char_length(action) BETWEEN 1 AND 100", name=op.f("ck_audit_events_action_length")
        ),
        sa.CheckConstraint(
            "char_length(target) <= 300", name=op.f("ck_audit_events_target_length")
        ),
        sa.CheckConstraint(
            "char_length(tenant) <= 100", name=op.f("ck_audit_events_tenant_length")
        ),
        sa.CheckConstraint("code ~ '^[A-Z_]+$'", name=op.f("ck_audit_events_code_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    # ListAuditEvents pages newest first, optionally by principal, action or target; the
    # retention sweep reads the oldest first.
    op.create_index("ix_audit_events_occurred_at_id", "audit_events", ["occurred_at", "id"])
    op.create_index("ix_audit_events_principal", "audit_events", ["principal", "occurred_at", "id"])
    op.create_index("ix_audit_events_target", "audit_events", ["target", "occurred_at", "id"])
    op.execute(
        """
        CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            cutoff text := current_setting('jobsched.audit_cutoff', true);
        BEGIN
            IF TG_OP = 'DELETE' AND coalesce(cutoff, '') <> ''
               AND OLD.occurred_at < CAST(cutoff AS timestamptz) THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
    )


def downgrade() -> None:
    op.drop_table("audit_events")
    op.execute("DROP FUNCTION audit_events_append_only()")
