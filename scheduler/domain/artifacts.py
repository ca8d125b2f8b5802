"""Artifacts: what one is, which names are allowed, the size limits (pure).

An artifact is a file a job's handler uploaded: named uniquely within its job (a later attempt's
upload of a name replaces the earlier attempt's), with its size, SHA-256, content type, the
attempt that stored it and when. Its content lives in PostgreSQL (artifact_chunks) or in S3
(`object_key`); scheduler/artifacts/ moves the bytes.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from scheduler.domain.echo import echo
from scheduler.domain.errors import (
    ArtifactTooLarge,
    FieldViolation,
    InvalidArgument,
    JobArtifactsTooLarge,
)

MAX_NAME_CHARS = 255
MAX_CONTENT_TYPE_CHARS = 255
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Defaults of --max-artifact-bytes and --max-job-artifact-bytes: a PostgreSQL-backed store holds
# every byte in the database, so the defaults keep one job from filling it by accident.
DEFAULT_MAX_ARTIFACT_BYTES = 1024**3  # 1 GiB
DEFAULT_MAX_JOB_ARTIFACT_BYTES = 4 * 1024**3  # 4 GiB
# Content is stored (artifact_chunks rows) and sent (GetArtifact) in chunks of this size.
CHUNK_BYTES = 1024 * 1024
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+(\s*;.*)?$")


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    id: str
    job_id: str
    name: str
    attempt: int
    size_bytes: int
    sha256: str
    content_type: str
    created_at: datetime
    object_key: str | None = None  # None: the content is in artifact_chunks


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://bucket` or `s3://bucket/prefix` (ValueError otherwise)."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
        return cls(bucket=parts.netloc, prefix=parts.path.strip("/"))

    def key(self, job_id: str, artifact_id: str) -> str:
        return "/".join(p for p in (self.prefix, job_id, artifact_id) if p)


@dataclass(frozen=True, slots=True)
class ArtifactLimits:
    """Per artifact and per job (the sum of its artifacts), in bytes."""

    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    max_job_bytes: int = DEFAULT_MAX_JOB_ARTIFACT_BYTES

    def __post_init__(self) -> None:
        if self.max_artifact_bytes < 1 or self.max_job_bytes < 1:
            raise ValueError("artifact size limits must be at least 1 byte")

    def check_artifact(self, size: int) -> None:
        if size > self.max_artifact_bytes:
            raise ArtifactTooLarge(
                f"the artifact is over the limit of {self.max_artifact_bytes} bytes per artifact",
                limit=self.max_artifact_bytes,
            )

    def check_job(self, stored_bytes: int, size: int) -> None:
        """`stored_bytes`: the job's other artifacts (not the one this upload replaces)."""
        if stored_bytes + size > self.max_job_bytes:
            raise JobArtifactsTooLarge(
                f"the job's artifacts would be {stored_bytes + size} bytes, over the limit of "
                f"{self.max_job_bytes} bytes per job",
                limit=self.max_job_bytes,
            )


def check_artifact_name(name: str, path: str, violations: list[FieldViolation]) -> None:
    if not name:
        violations.append(FieldViolation(path, "must not be empty"))
    elif len(name) > MAX_NAME_CHARS:
        violations.append(FieldViolation(path, f"must be at most {MAX_NAME_CHARS} characters"))
    elif _CONTROL.search(name):
        violations.append(FieldViolation(path, "must not contain control characters or NUL"))
    elif name != name.strip():
        violations.append(FieldViolation(path, "must not start or end with white space"))


def validate_artifact_name(name: str, path: str = "name") -> str:
    violations: list[FieldViolation] = []
    check_artifact_name(name, path, violations)
    if violations:
        raise InvalidArgument(violations)
    return name


def resolve_content_type(
    content_type: str, name: str, path: str, violations: list[FieldViolation]
) -> str:
    """The given MIME type (checked), or one guessed from the name."""
    if not content_type:
        guessed, _ = mimetypes.guess_type(name, strict=False)
        return guessed or DEFAULT_CONTENT_TYPE
    if len(content_type) > MAX_CONTENT_TYPE_CHARS or not _CONTENT_TYPE.match(content_type):
        violations.append(
            FieldViolation(path, f"{echo(content_type)} is not a MIME type such as text/plain")
        )
    return content_type


def check_sha256(value: str, path: str) -> str:
    if not SHA256_PATTERN.match(value):
        raise InvalidArgument([FieldViolation(path, "must be 64 lower-case hex digits")])
    return value
