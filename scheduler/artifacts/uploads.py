"""Receiving an artifact: check the attempt, spool and hash the bytes, then store the artifact
whole or not at all.

1. Before any byte: the job must be RUNNING the upload's attempt on the uploading executor
   (AttemptNotRunning), and the job's other artifacts must leave room (JobArtifactsTooLarge).
2. The chunks are spooled (scheduler/artifacts/spool.py) and counted against both limits as they
   arrive, so an oversized upload is refused early and nothing of it is kept.
3. The finish message's SHA-256 must match what arrived.
4. One transaction checks the attempt and the per-job limit again (the job's uploads are
   serialised by an advisory lock), replaces an earlier attempt's artifact of the same name, and
   inserts the row, with its chunks when PostgreSQL holds the content. With S3, the object is
   written before that transaction, its key recorded in artifact_deletions beforehand (due in an
   hour) and forgotten by the transaction: an upload that fails or dies between the two leaves
   an object that the janitor deletes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from scheduler.artifacts.s3 import S3Objects
from scheduler.artifacts.spool import Spool
from scheduler.domain.artifacts import ArtifactLimits, ArtifactRecord
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.store import artifacts as sql
from scheduler.store.database import Database

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger("jobsched.artifacts")

# Chunks inserted per statement (8 MiB).
INSERT_BATCH = 8
# An S3 object written for an upload that never committed is deleted this long after.
ORPHAN_GRACE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class UploadTarget:
    job_id: str
    attempt: int
    executor: str
    name: str
    content_type: str


class ArtifactUploads:
    def __init__(
        self,
        db: Database,
        limits: ArtifactLimits,
        clock: Callable[[], datetime],
        objects: S3Objects | None = None,
    ) -> None:
        self.db = db
        self.limits = limits
        self.clock = clock
        self.objects = objects  # None: the content goes to artifact_chunks

    async def check(self, target: UploadTarget) -> int:
        """Raise unless the attempt may upload; returns the bytes of the job's other artifacts."""
        async with self.db.transaction() as conn:
            await sql.lock_running_attempt(conn, target.job_id, target.attempt, target.executor)
            stored = await sql.select_stored_bytes(conn, target.job_id, target.name)
        self.limits.check_job(stored, 0)
        return stored

    async def upload(
        self,
        target: UploadTarget,
        chunks: AsyncIterator[bytes],
        finish: Callable[[], str | None],
    ) -> ArtifactRecord:
        """Store the artifact from `chunks`; `finish()` gives the SHA-256 that the stream ended
        with (None: it ended without one)."""
        stored = await self.check(target)
        with Spool(self.limits) as spool:
            async for chunk in chunks:
                await spool.write(chunk)
                self.limits.check_job(stored, spool.size)
            expected = finish()
            if expected is None:
                raise InvalidArgument(
                    [FieldViolation("finish", "the upload ended without its finish message")]
                )
            if expected != spool.sha256:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "finish.sha256",
                            f"the content's SHA-256 is {spool.sha256}, not {expected}",
                        )
                    ]
                )
            record = ArtifactRecord(
                id=str(uuid.uuid4()),
                job_id=target.job_id,
                name=target.name,
                attempt=target.attempt,
                size_bytes=spool.size,
                sha256=spool.sha256,
                content_type=target.content_type,
                created_at=self.clock(),
            )
            if self.objects is None:
                return await self._commit_chunks(target, record, spool)
            return await self._commit_object(self.objects, target, record, spool)

    async def _commit_chunks(
        self, target: UploadTarget, record: ArtifactRecord, spool: Spool
    ) -> ArtifactRecord:
        async with self.db.transaction() as conn:
            await self._replace(conn, target, record)
            seq, batch = 0, []
            async for chunk in spool.chunks():
                batch.append(chunk)
                if len(batch) == INSERT_BATCH:
                    await sql.insert_chunks(conn, record.id, seq, batch)
                    seq, batch = seq + len(batch), []
            if batch:
                await sql.insert_chunks(conn, record.id, seq, batch)
        return record

    async def _commit_object(
        self, objects: S3Objects, target: UploadTarget, record: ArtifactRecord, spool: Spool
    ) -> ArtifactRecord:
        key = objects.key(record.job_id, record.id)
        stored = dataclasses.replace(record, object_key=key)
        async with self.db.transaction() as conn:
            await sql.record_object_deletion(conn, key, self.clock() + ORPHAN_GRACE)
        try:
            await objects.put(key, spool.rewind(), record.content_type)
            async with self.db.transaction() as conn:
                await self._replace(conn, target, stored)
                await sql.forget_object_deletion(conn, key)
        except BaseException:
            # The janitor deletes it in an hour anyway (its key stays recorded); now is better.
            with contextlib.suppress(Exception):
                await objects.delete([key])
            raise
        return stored

    async def _replace(
        self, conn: AsyncConnection, target: UploadTarget, record: ArtifactRecord
    ) -> None:
        await sql.lock_running_attempt(conn, target.job_id, target.attempt, target.executor)
        await sql.lock_job_artifacts(conn, target.job_id)
        self.limits.check_job(
            await sql.select_stored_bytes(conn, target.job_id, target.name), record.size_bytes
        )
        await sql.delete_earlier_attempts(conn, target.job_id, target.name, target.attempt)
        await sql.insert_artifact(conn, record)
