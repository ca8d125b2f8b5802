"""Statements on artifacts, artifact_chunks and artifact_deletions, one named function each.

An upload is committed in one transaction (scheduler/artifacts/uploads.py): the attempt is
checked and the job's row key-share locked (its outcome may still be written, it cannot be
deleted meanwhile), the job's artifacts serialised by a transaction-level advisory lock (so two
uploads cannot both pass the per-job limit), the earlier attempt's artifact of that name deleted,
the row and (PostgreSQL storage) its chunks inserted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.artifacts import ArtifactRecord
from scheduler.domain.errors import ArtifactExists, AttemptNotRunning
from scheduler.store.database import sqlstate

_COLUMNS = "id, job_id, name, attempt, size_bytes, sha256, content_type, object_key, created_at"


def _to_record(row: Row[Any]) -> ArtifactRecord:
    m = row._mapping
    return ArtifactRecord(
        id=str(m["id"]),
        job_id=str(m["job_id"]),
        name=m["name"],
        attempt=m["attempt"],
        size_bytes=m["size_bytes"],
        sha256=m["sha256"],
        content_type=m["content_type"],
        object_key=m["object_key"],
        created_at=m["created_at"],
    )


_LOCK_RUNNING_ATTEMPT = text("""
SELECT 1 FROM jobs
WHERE id = :job_id AND state = 'running' AND attempt = :attempt AND executor = :executor
FOR KEY SHARE
""")


async def lock_running_attempt(
    conn: AsyncConnection, job_id: str, attempt: int, executor: str
) -> None:
    """Raise AttemptNotRunning unless the job is RUNNING this attempt on this executor; the row
    is key-share locked until the transaction ends (outcomes may be written, not a delete)."""
    params = {"job_id": job_id, "attempt": attempt, "executor": executor}
    if (await conn.execute(_LOCK_RUNNING_ATTEMPT, params)).first() is None:
        raise AttemptNotRunning(
            f"attempt {attempt} of job {job_id} is not running on executor {executor!r}"
        )


_LOCK_JOB_ARTIFACTS = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def lock_job_artifacts(conn: AsyncConnection, job_id: str) -> None:
    """Serialise the uploads of one job until the transaction ends."""
    await conn.execute(_LOCK_JOB_ARTIFACTS, {"key": f"jobsched.artifacts:{job_id}"})


_SELECT_STORED_BYTES = text("""
SELECT coalesce(sum(size_bytes), 0) FROM artifacts WHERE job_id = :job_id AND name <> :name
""")


async def select_stored_bytes(conn: AsyncConnection, job_id: str, except_name: str) -> int:
    """The size of the job's artifacts other than `except_name` (which an upload replaces)."""
    row = (await conn.execute(_SELECT_STORED_BYTES, {"job_id": job_id, "name": except_name})).one()
    return int(row[0])


_DELETE_EARLIER_ATTEMPTS = text("""
DELETE FROM artifacts WHERE job_id = :job_id AND name = :name AND attempt < :attempt
""")


async def delete_earlier_attempts(
    conn: AsyncConnection, job_id: str, name: str, attempt: int
) -> int:
    """Delete the artifact of that name stored by an earlier attempt (the trigger records its S3
    object for deletion); returns how many rows went."""
    result = await conn.execute(
        _DELETE_EARLIER_ATTEMPTS, {"job_id": job_id, "name": name, "attempt": attempt}
    )
    return int(getattr(result, "rowcount", 0))


_INSERT_ARTIFACT = text(f"""
INSERT INTO artifacts ({_COLUMNS})
VALUES (:id, :job_id, :name, :attempt, :size_bytes, :sha256, :content_type, :object_key,
        :created_at)
""")


async def insert_artifact(conn: AsyncConnection, record: ArtifactRecord) -> None:
    """Raise ArtifactExists when the job has an artifact of that name (this attempt's, or a later
    one's)."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                _INSERT_ARTIFACT,
                {
                    "id": record.id,
                    "job_id": record.job_id,
                    "name": record.name,
                    "attempt": record.attempt,
                    "size_bytes": record.size_bytes,
                    "sha256": record.sha256,
                    "content_type": record.content_type,
                    "object_key": record.object_key,
                    "created_at": record.created_at,
                },
            )
    except IntegrityError as exc:
        if sqlstate(exc) == "23505":
            raise ArtifactExists(record.name) from None
        raise


_INSERT_CHUNKS = text("""
INSERT INTO artifact_chunks (artifact_id, seq, data)
SELECT :artifact_id, t.seq, t.data
FROM unnest(CAST(:seqs AS integer[]), CAST(:data AS bytea[])) AS t(seq, data)
""")


async def insert_chunks(
    conn: AsyncConnection, artifact_id: str, first_seq: int, chunks: Sequence[bytes]
) -> None:
    """Store consecutive chunks of an artifact, numbered from `first_seq`."""
    await conn.execute(
        _INSERT_CHUNKS,
        {
            "artifact_id": artifact_id,
            "seqs": list(range(first_seq, first_seq + len(chunks))),
            "data": list(chunks),
        },
    )


# The job of the tenant, left-joined to its artifacts: no row means no such job.
_LIST_ARTIFACTS = text("""
SELECT a.id, jobs.id AS job_id, a.name, a.attempt, a.size_bytes, a.sha256, a.content_type,
       a.object_key, a.created_at
FROM jobs LEFT JOIN artifacts a ON a.job_id = jobs.id
WHERE jobs.tenant = :tenant AND jobs.id = :job_id
ORDER BY a.name
""")


async def list_artifacts(
    conn: AsyncConnection, tenant: str, job_id: str
) -> list[ArtifactRecord] | None:
    """The job's artifacts by name; None when the tenant has no such job."""
    rows = (await conn.execute(_LIST_ARTIFACTS, {"tenant": tenant, "job_id": job_id})).all()
    if not rows:
        return None
    return [_to_record(row) for row in rows if row._mapping["id"] is not None]


_SELECT_ARTIFACT = text("""
SELECT a.id, jobs.id AS job_id, a.name, a.attempt, a.size_bytes, a.sha256, a.content_type,
       a.object_key, a.created_at
FROM jobs LEFT JOIN artifacts a ON a.job_id = jobs.id AND a.name = :name
WHERE jobs.tenant = :tenant AND jobs.id = :job_id
""")


async def select_artifact(
    conn: AsyncConnection, tenant: str, job_id: str, name: str
) -> tuple[bool, ArtifactRecord | None]:
    """(whether the tenant has the job, its artifact of that name)."""
    row = (
        await conn.execute(_SELECT_ARTIFACT, {"tenant": tenant, "job_id": job_id, "name": name})
    ).first()
    if row is None:
        return False, None
    return True, (_to_record(row) if row._mapping["id"] is not None else None)


_SELECT_CHUNKS = text("""
SELECT data FROM artifact_chunks
WHERE artifact_id = :artifact_id AND seq >= :first_seq
ORDER BY seq
LIMIT :limit
""")


async def select_chunks(
    conn: AsyncConnection, artifact_id: str, first_seq: int, limit: int
) -> list[bytes]:
    """Up to `limit` chunks of an artifact from `first_seq` on, in order."""
    rows = await conn.execute(
        _SELECT_CHUNKS, {"artifact_id": artifact_id, "first_seq": first_seq, "limit": limit}
    )
    return [bytes(row[0]) for row in rows]


_RECORD_OBJECT_DELETION = text("""
INSERT INTO artifact_deletions (object_key, not_before) VALUES (:key, :not_before)
ON CONFLICT (object_key) DO UPDATE SET not_before = excluded.not_before
""")


async def record_object_deletion(conn: AsyncConnection, key: str, not_before: datetime) -> None:
    """Have the janitor delete this S3 object once `not_before` has passed."""
    await conn.execute(_RECORD_OBJECT_DELETION, {"key": key, "not_before": not_before})


_FORGET_OBJECT_DELETION = text("DELETE FROM artifact_deletions WHERE object_key = :key")


async def forget_object_deletion(conn: AsyncConnection, key: str) -> None:
    """The object is an artifact's now: keep it."""
    await conn.execute(_FORGET_OBJECT_DELETION, {"key": key})


_SELECT_DUE_DELETIONS = text("""
SELECT object_key FROM artifact_deletions
WHERE not_before <= :now
ORDER BY not_before
LIMIT :limit
""")


async def select_due_deletions(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Up to `limit` S3 keys whose objects are due for deletion, oldest first."""
    rows = await conn.execute(_SELECT_DUE_DELETIONS, {"now": now, "limit": limit})
    return [row[0] for row in rows]


_DELETE_DELETIONS = text("""
DELETE FROM artifact_deletions
WHERE object_key = ANY(CAST(:keys AS text[])) AND not_before <= :now
""")


async def delete_deletions(conn: AsyncConnection, keys: Sequence[str], now: datetime) -> int:
    """Forget these keys (their objects are gone), unless one was recorded again for later."""
    result = await conn.execute(_DELETE_DELETIONS, {"keys": list(keys), "now": now})
    return int(getattr(result, "rowcount", 0))
