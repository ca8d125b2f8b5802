"""hot path indexes: the claim's order, the running jobs of a queue, the timeout backstop

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:00:00.000000

- ix_jobs_claim_priority: QUEUED jobs of every queue in the claim's order (priority DESC, run_at,
  id), so the claim reads the first `limit` eligible rows instead of sorting every QUEUED row
  (ix_jobs_claim leads with queue and serves one queue at a time: the limited queues' part).
- ix_jobs_claim_starved: QUEUED jobs oldest first (run_at, id), for the claim's starved parts (a
  range ending at now - starvation_after: empty, and free, while nothing starves).
- ix_jobs_running_queue: the RUNNING jobs of one (tenant, queue), counted by the claim for the
  limited queues and, at most max_concurrency + 1 of them, by a QUEUED job's waiting reason.
- ix_jobs_timeout_deadline: the timeout deadline of RUNNING jobs with a timeout, for the leader's
  backstop. `timestamptz + interval` is only STABLE (it depends on the session's TimeZone), so
  the deadline is computed in UTC, which is IMMUTABLE: timeout is a duration, and a day is 24 h.
  The backstop's predicate uses the same expression (scheduler/store/attempts.py).

The lease rescue was indexed already (ix_jobs_lease_expiry, 0001).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_QUEUED = sa.text("state = 'queued'")
_RUNNING = sa.text("state = 'running'")
_RUNNING_WITH_TIMEOUT = sa.text("state = 'running' AND timeout IS NOT NULL")
_DEADLINE = "timezone('UTC', timezone('UTC', started_at) + timeout)"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_claim_priority",
        "jobs",
        [sa.literal_column("priority DESC"), "run_at", "id"],
        unique=False,
        postgresql_where=_QUEUED,
    )
    op.create_index(
        "ix_jobs_claim_starved",
        "jobs",
        ["run_at", "id"],
        unique=False,
        postgresql_where=_QUEUED,
    )
    op.create_index(
        "ix_jobs_running_queue",
        "jobs",
        ["tenant", "queue"],
        unique=False,
        postgresql_where=_RUNNING,
    )
    op.create_index(
        "ix_jobs_timeout_deadline",
        "jobs",
        [sa.text(_DEADLINE)],
        unique=False,
        postgresql_where=_RUNNING_WITH_TIMEOUT,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_jobs_timeout_deadline", table_name="jobs", postgresql_where=_RUNNING_WITH_TIMEOUT
    )
    op.drop_index("ix_jobs_running_queue", table_name="jobs", postgresql_where=_RUNNING)
    op.drop_index("ix_jobs_claim_starved", table_name="jobs", postgresql_where=_QUEUED)
    op.drop_index("ix_jobs_claim_priority", table_name="jobs", postgresql_where=_QUEUED)
