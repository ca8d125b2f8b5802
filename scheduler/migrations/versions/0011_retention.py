"""retention: finished jobs are deleted after a retention period (a queue setting with a global
default), found through an index of the finished jobs of each queue

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 13:30:00.000000

`queues.retention`: how long the queue's finished jobs are kept; NULL means the global default
(`--retention-days`, 30 days), '0' keeps them forever.

`ix_jobs_retention (tenant, queue, finished_at) WHERE finished_at IS NOT NULL`: the leader's
retention sweep (scheduler/maintenance/retention.py) reads, per queue, its oldest finished jobs
up to the queue's cutoff, so every row it reads is one it deletes. ix_jobs_history cannot serve
it: ordered by tenant then finished time across queues, a queue kept longer than another would
be read again at every sweep. The index costs one entry per job, written when it finishes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("queues", sa.Column("retention", postgresql.INTERVAL(), nullable=True))
    op.create_check_constraint(
        op.f("ck_queues_retention_non_negative"),
        "queues",
        "retention IS NULL OR retention >= interval '0'",
    )
    op.create_index(
        "ix_jobs_retention",
        "jobs",
        ["tenant", "queue", "finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_jobs_retention", table_name="jobs", postgresql_where=sa.text("finished_at IS NOT NULL")
    )
    op.drop_constraint(op.f("ck_queues_retention_non_negative"), "queues", type_="check")
    op.drop_column("queues", "retention")
