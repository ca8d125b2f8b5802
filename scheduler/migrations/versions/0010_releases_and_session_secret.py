"""releases and the executor-session secret: a bound on how often a job is handed back, and the
key that signs executor session tokens

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 13:00:00.000000

`jobs.releases` counts the attempts of a job that were handed back without running: assignments
reverted because the executor did not acknowledge them, and attempts released by an executor
that was shutting down. Each release grows max_attempts by one (the attempt number is the
fencing token and never goes back), so without a bound an executor that never acknowledges
kept a job alive forever; past the bound the job ends DEAD.

`cluster_secrets` holds random keys shared by the replicas. The row `executor_session` signs the
session tokens given to executors in `Registered`: any replica can check that a reconnecting
executor is the one the token was given to, without storing the token anywhere.
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column(
        "jobs", sa.Column("releases", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.create_check_constraint(op.f("ck_jobs_releases_non_negative"), "jobs", "releases >= 0")
    cluster_secrets = op.create_table(
        "cluster_secrets",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("length(secret) >= 32", name=op.f("ck_cluster_secrets_long_enough")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cluster_secrets")),
    )
    op.bulk_insert(
        cluster_secrets, [{"name": "executor_session", "secret": secrets.token_bytes(32)}]
    )


def downgrade() -> None:
    op.drop_table("cluster_secrets")
    op.drop_constraint(op.f("ck_jobs_releases_non_negative"), "jobs", type_="check")
    op.drop_column("jobs", "releases")
