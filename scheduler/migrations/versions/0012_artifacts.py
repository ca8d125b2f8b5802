"""artifacts: files a job's handlers upload, stored in PostgreSQL (chunked) or in S3

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 10:00:00.000000

`artifacts`: one row per stored artifact, unique per (job_id, name): a job has one artifact of a
name, and an upload from a later attempt replaces the earlier attempt's (a retry that produces
`report.pdf` again is what users look for, not a list of every attempt's copy); the row says
which attempt stored it. ON DELETE CASCADE from jobs, so DeleteJob and the retention sweep take
the artifacts with the job. `object_key` is NULL for content stored in `artifact_chunks`, the S3
key otherwise.

`artifact_chunks`: the content of a PostgreSQL-stored artifact in chunks of 1 MiB (the last one
shorter), primary key (artifact_id, seq), ON DELETE CASCADE from artifacts. Stored EXTERNAL (out
of line, uncompressed): most artifacts are compressed already (archives, images), and pglz on
them only costs CPU on every write.

`artifact_deletions`: S3 objects to delete. A cascade cannot delete an object, so an AFTER DELETE
trigger on artifacts records the key of every S3-stored artifact that goes, whatever deleted it
(DeleteJob, retention, a replacement), in the same transaction; the leader's artifact janitor
deletes the objects and then the rows. An upload records its key here before it writes the
object, with `not_before` an hour ahead, and removes the row when it commits the artifact: an
upload that dies midway leaves no object behind for long.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """
CREATE FUNCTION artifacts_record_object_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO artifact_deletions (object_key, not_before) VALUES (OLD.object_key, now())
    ON CONFLICT (object_key) DO UPDATE SET not_before = excluded.not_before;
    RETURN NULL;
END
$$
"""

_TRIGGER = """
CREATE TRIGGER artifacts_object_deleted AFTER DELETE ON artifacts
FOR EACH ROW WHEN (OLD.object_key IS NOT NULL)
EXECUTE FUNCTION artifacts_record_object_deletion()
"""


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("job_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("object_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("attempt >= 1", name=op.f("ck_artifacts_attempt_positive")),
        sa.CheckConstraint("size_bytes >= 0", name=op.f("ck_artifacts_size_non_negative")),
        sa.CheckConstraint("length(sha256) = 64", name=op.f("ck_artifacts_sha256_hex")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_artifacts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("job_id", "name", name=op.f("uq_artifacts_job_id_name")),
    )
    op.create_table(
        "artifact_chunks",
        sa.Column("artifact_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("seq >= 0", name=op.f("ck_artifact_chunks_seq_non_negative")),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_artifact_chunks_artifact_id_artifacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artifact_id", "seq", name=op.f("pk_artifact_chunks")),
    )
    op.execute("ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL")
    op.create_table(
        "artifact_deletions",
        sa.Column("object_key", sa.Text(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("object_key", name=op.f("pk_artifact_deletions")),
    )
    op.create_index(
        "ix_artifact_deletions_not_before", "artifact_deletions", ["not_before"], unique=False
    )
    op.execute(_FUNCTION)
    op.execute(_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER artifacts_object_deleted ON artifacts")
    op.execute("DROP FUNCTION artifacts_record_object_deletion()")
    op.drop_index("ix_artifact_deletions_not_before", table_name="artifact_deletions")
    op.drop_table("artifact_deletions")
    op.drop_table("artifact_chunks")
    op.drop_table("artifacts")
