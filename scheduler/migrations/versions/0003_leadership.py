"""leadership and replicas: the fencing epoch of the elected leader, and every replica's
presence (address, connected executors) for GetClusterStatus

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 09:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row. The epoch is bumped by every new leader; leader-only transactions read it FOR
    # SHARE and abort if it is not theirs, so a deposed leader cannot write.
    op.create_table(
        "leadership",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("leader", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        # Renewed by every probe of the leader; a follower that finds it stale terminates
        # the holder's session (a frozen leader would otherwise keep the lock forever).
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("backend_pid", sa.Integer(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_leadership_single_row")),
        sa.CheckConstraint("epoch >= 1", name=op.f("ck_leadership_epoch_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leadership")),
    )
    op.create_table(
        "scheduler_replicas",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "executors",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_replicas")),
    )


def downgrade() -> None:
    op.drop_table("scheduler_replicas")
    op.drop_table("leadership")
