"""ArtifactService: executors upload artifacts of their running attempts, clients list and
download them (protos/jobsched/v1/artifact_service.proto).

An upload proves who sends it with the executor's session token (issued on its Connect stream,
verifiable by any replica: scheduler/dispatch/registration.py) and names the attempt; the store
then checks that the job runs that attempt on that executor. Reads are scoped to the caller's
tenant like every job read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from jobsched.v1 import artifact_service_pb2 as pb
from jobsched.v1 import artifact_service_pb2_grpc
from scheduler.api.convert import timestamp
from scheduler.artifacts.downloads import ArtifactDownloads
from scheduler.artifacts.uploads import ArtifactUploads, UploadTarget
from scheduler.auth.identity import tenant_of
from scheduler.dispatch.registration import SessionTokens
from scheduler.domain.artifacts import (
    ArtifactRecord,
    check_artifact_name,
    check_sha256,
    resolve_content_type,
    validate_artifact_name,
)
from scheduler.domain.errors import AttemptNotRunning, FieldViolation, InvalidArgument
from scheduler.domain.validation import validate_job_id

Context = grpc.aio.ServicerContext[Any, Any]
MAX_UPLOAD_CHUNK_BYTES = 4 * 1024 * 1024


def artifact_to_proto(record: ArtifactRecord) -> pb.Artifact:
    return pb.Artifact(
        job_id=record.job_id,
        name=record.name,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        content_type=record.content_type,
        attempt=record.attempt,
        create_time=timestamp(record.created_at),
    )


def target_from_header(header: pb.UploadArtifactHeader) -> UploadTarget:
    violations: list[FieldViolation] = []
    job_id = ""
    try:
        job_id = validate_job_id(header.job_id, "header.job_id")
    except InvalidArgument as exc:
        violations += exc.violations
    if header.attempt < 1:
        violations.append(FieldViolation("header.attempt", "must be at least 1"))
    if not header.executor:
        violations.append(FieldViolation("header.executor", "must name the uploading executor"))
    if not header.session_token:
        violations.append(
            FieldViolation("header.session_token", "must be the executor's session token")
        )
    check_artifact_name(header.name, "header.name", violations)
    content_type = resolve_content_type(
        header.content_type, header.name, "header.content_type", violations
    )
    if violations:
        raise InvalidArgument(violations)
    return UploadTarget(
        job_id=job_id,
        attempt=header.attempt,
        executor=header.executor,
        name=header.name,
        content_type=content_type,
    )


class _UploadStream:
    """The chunks after the header, and the finish message's checksum once it has come."""

    def __init__(self, requests: AsyncIterator[pb.UploadArtifactRequest]) -> None:
        self._requests = requests
        self.sha256: str | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        async for request in self._requests:
            kind = request.WhichOneof("message")
            if self.sha256 is not None:
                raise InvalidArgument([FieldViolation(kind or "message", "after the finish")])
            if kind == "chunk":
                if len(request.chunk) > MAX_UPLOAD_CHUNK_BYTES:
                    raise InvalidArgument(
                        [FieldViolation("chunk", f"at most {MAX_UPLOAD_CHUNK_BYTES} bytes")]
                    )
                yield request.chunk
            elif kind == "finish":
                self.sha256 = check_sha256(request.finish.sha256, "finish.sha256")
            elif kind == "header":
                raise InvalidArgument([FieldViolation("header", "only the first message")])
            else:
                raise InvalidArgument([FieldViolation("message", "is empty")])


class ArtifactService(artifact_service_pb2_grpc.ArtifactServiceServicer):
    def __init__(
        self,
        uploads: ArtifactUploads,
        downloads: ArtifactDownloads,
        tokens: Callable[[], Awaitable[SessionTokens]],
    ) -> None:
        self.uploads = uploads
        self.downloads = downloads
        self.tokens = tokens

    async def UploadArtifact(
        self, request_iterator: AsyncIterator[pb.UploadArtifactRequest], context: Context
    ) -> pb.UploadArtifactResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("message") != "header":
            raise InvalidArgument([FieldViolation("header", "must be the first message")])
        target = target_from_header(first.header)
        tokens = await self.tokens()
        if not tokens.verify(target.executor, first.header.session_token):
            raise AttemptNotRunning(
                f"the session token was not issued to executor {target.executor!r}"
            )
        stream = _UploadStream(request_iterator)
        record = await self.uploads.upload(target, stream.chunks(), lambda: stream.sha256)
        return pb.UploadArtifactResponse(artifact=artifact_to_proto(record))

    async def ListJobArtifacts(
        self, request: pb.ListJobArtifactsRequest, context: Context
    ) -> pb.ListJobArtifactsResponse:
        tenant = tenant_of(context)
        job_id = validate_job_id(request.job_id, "job_id")
        records = await self.downloads.list(tenant, job_id)
        return pb.ListJobArtifactsResponse(artifacts=[artifact_to_proto(r) for r in records])

    async def GetArtifact(
        self, request: pb.GetArtifactRequest, context: Context
    ) -> AsyncIterator[pb.GetArtifactResponse]:
        tenant = tenant_of(context)
        job_id = validate_job_id(request.job_id, "job_id")
        name = validate_artifact_name(request.name, "name")
        record = await self.downloads.get(tenant, job_id, name)
        yield pb.GetArtifactResponse(artifact=artifact_to_proto(record))
        async for chunk in self.downloads.content(record):
            yield pb.GetArtifactResponse(chunk=chunk)
