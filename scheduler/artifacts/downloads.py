"""Reading artifacts back: the list of a job's, one's metadata, its content in chunks (from
artifact_chunks, a few chunks per short read, or from the object store)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from scheduler.artifacts.s3 import S3Objects
from scheduler.domain.artifacts import ArtifactRecord
from scheduler.domain.errors import (
    ArtifactNotFound,
    ArtifactStoreMissing,
    ConcurrentModification,
    JobNotFound,
)
from scheduler.store import artifacts as sql
from scheduler.store.database import Database

# Chunks read per statement: 4 MiB, each read its own short transaction, so a slow reader never
# holds a connection between messages.
READ_BATCH = 4


class ArtifactDownloads:
    def __init__(self, db: Database, objects: S3Objects | None = None) -> None:
        self.db = db
        self.objects = objects

    async def list(self, tenant: str, job_id: str) -> list[ArtifactRecord]:
        async with self.db.read() as conn:
            records = await sql.list_artifacts(conn, tenant, job_id)
        if records is None:
            raise JobNotFound(job_id)
        return records

    async def get(self, tenant: str, job_id: str, name: str) -> ArtifactRecord:
        async with self.db.read() as conn:
            job_exists, record = await sql.select_artifact(conn, tenant, job_id, name)
        if not job_exists:
            raise JobNotFound(job_id)
        if record is None:
            raise ArtifactNotFound(job_id, name)
        return record

    async def content(self, record: ArtifactRecord) -> AsyncIterator[bytes]:
        """The artifact's bytes in order; ConcurrentModification when it was replaced or deleted
        while it was read (fewer bytes than its size arrived)."""
        sent = 0
        if record.object_key is not None:
            if self.objects is None:
                raise ArtifactStoreMissing()
            async for chunk in self.objects.chunks(record.object_key):
                sent += len(chunk)
                yield chunk
        else:
            seq = 0
            while True:
                async with self.db.read() as conn:
                    chunks = await sql.select_chunks(conn, record.id, seq, READ_BATCH)
                for chunk in chunks:
                    sent += len(chunk)
                    yield chunk
                if len(chunks) < READ_BATCH:
                    break
                seq += len(chunks)
        if sent != record.size_bytes:
            raise ConcurrentModification(
                f"artifact {record.name!r} was replaced or deleted while it was read"
            )
