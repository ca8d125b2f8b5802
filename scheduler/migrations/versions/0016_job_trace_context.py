"""job trace context: the W3C traceparent of the submit, continued by every attempt's spans

Revision ID: 0016
Revises: 0014 (to be 0015 when merged after 0015_audit_events)
Create Date: 2026-12-04 01:00:00.000000

`jobs.trace_context`: the traceparent of the SubmitJob(s) call (the scheduler's server span, or
the caller's own when the scheduler does not trace), sent to the executor with each assignment
so that one trace shows the submit, the queue wait and every attempt. Nullable, no default and
no index: adding it rewrites nothing (a catalog change only) and no query filters on it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("trace_context", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_jobs_trace_context_bounded"),
        "jobs",
        "trace_context IS NULL OR length(trace_context) <= 55",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_jobs_trace_context_bounded"), "jobs", type_="check")
    op.drop_column("jobs", "trace_context")
