"""Artifacts as the client and the executor see them: the `Artifact` record, the checksum error,
and reading a file or bytes as upload chunks (protos/jobsched/v1/artifact_service.proto)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import grpc

from jobsched.errors import JobschedError
from jobsched.v1 import artifact_service_pb2 as pb

# Upload and download chunk size: 1 MiB (the server stores and sends chunks of this size).
CHUNK_BYTES = 1024 * 1024

ArtifactSource = bytes | bytearray | memoryview | str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class Artifact:
    """A stored artifact of a job."""

    job_id: str
    name: str
    size_bytes: int
    sha256: str  # lower-case hex
    content_type: str
    attempt: int  # the attempt that stored it
    created_at: datetime

    @classmethod
    def from_proto(cls, message: pb.Artifact) -> Artifact:
        return cls(
            job_id=message.job_id,
            name=message.name,
            size_bytes=message.size_bytes,
            sha256=message.sha256,
            content_type=message.content_type,
            attempt=message.attempt,
            created_at=message.create_time.ToDatetime(tzinfo=UTC),
        )


class ChecksumMismatchError(JobschedError):
    """The downloaded bytes do not match the artifact's SHA-256 (or its size)."""

    default_reason = "CHECKSUM_MISMATCH"
    default_code = grpc.StatusCode.DATA_LOSS


async def upload_requests(
    header: pb.UploadArtifactHeader, source: ArtifactSource
) -> AsyncIterator[pb.UploadArtifactRequest]:
    """The messages of an upload: the header, the content in 1 MiB chunks (a file is read in a
    thread, a chunk at a time), and the finish with the SHA-256."""
    yield pb.UploadArtifactRequest(header=header)
    digest = hashlib.sha256()
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        for start in range(0, len(view), CHUNK_BYTES):
            chunk = bytes(view[start : start + CHUNK_BYTES])
            digest.update(chunk)
            yield pb.UploadArtifactRequest(chunk=chunk)
    else:
        with Path(source).open("rb") as file:  # noqa: ASYNC230 (opening is quick; reads are not)
            while chunk := await asyncio.to_thread(_read_hashed, file, digest):
                yield pb.UploadArtifactRequest(chunk=chunk)
    yield pb.UploadArtifactRequest(finish=pb.UploadArtifactFinish(sha256=digest.hexdigest()))


def _read_hashed(file: BinaryIO, digest: hashlib._Hash) -> bytes:
    data = file.read(CHUNK_BYTES)
    digest.update(data)
    return data
