"""api keys: opaque bearer credentials (jsk_...), stored as their SHA-256 digest

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 19:00:00.000000

`api_keys`: one row per key (AuthService, `jobsched keys`); the secret itself is never stored,
only its digest (unique: a presented key is found by it). Rows are kept after revocation
(revoked_at), so that lists show what was revoked and when. A new, empty table: nothing to
rewrite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("tenants", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('viewer', 'submitter', 'operator', 'admin', 'executor')",
            name=op.f("ck_api_keys_role_known"),
        ),
        sa.CheckConstraint("cardinality(tenants) >= 1", name=op.f("ck_api_keys_has_tenants")),
        sa.CheckConstraint("length(digest) = 32", name=op.f("ck_api_keys_digest_sha256")),
        sa.CheckConstraint(
            "char_length(name) BETWEEN 1 AND 200", name=op.f("ck_api_keys_name_length")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("digest", name=op.f("uq_api_keys_digest")),
    )
    op.create_index("ix_api_keys_created_at_id", "api_keys", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_created_at_id", table_name="api_keys")
    op.drop_table("api_keys")
