"""Artifact content in S3-compatible object storage (AWS S3, MinIO, Ceph, ...), through boto3.

boto3 is the AWS SDK itself, the best kept S3 client for Python; its calls block, so each runs in
a worker thread (`asyncio.to_thread`), and its client is thread-safe. aiobotocore would avoid the
threads but pins exact botocore versions, which breaks other packages' boto3 in the same
environment; an upload or a download is a handful of calls per MiB, so threads cost nothing
that matters here.

Configuration: `--artifact-store s3://bucket/prefix`; credentials and region from the standard
AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or
AWS_DEFAULT_REGION, AWS_PROFILE, instance roles: whatever boto3's default chain finds), the
endpoint from `--artifact-s3-endpoint` (else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS).
Objects are named `<prefix>/<job id>/<artifact id>`: never the artifact's own name, which may
hold any character.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions

from scheduler.domain.artifacts import CHUNK_BYTES, S3Location
from scheduler.domain.errors import NotFound, Unavailable

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

# S3's DeleteObjects takes at most this many keys.
MAX_DELETE_KEYS = 1000


class ArtifactStoreUnavailable(Unavailable):
    """The artifact object store cannot be reached."""

    reason = "ARTIFACT_STORE_UNAVAILABLE"


def _unavailable(exc: Exception) -> ArtifactStoreUnavailable:
    return ArtifactStoreUnavailable(f"the artifact store failed: {type(exc).__name__}: {exc}")


class S3Objects:
    """Put, stream and delete objects under one bucket and prefix."""

    def __init__(self, location: S3Location, *, endpoint_url: str | None = None) -> None:
        self.location = location
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=32,
        )
        self._client: S3Client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, config=config
        )

    def key(self, job_id: str, artifact_id: str) -> str:
        return self.location.key(job_id, artifact_id)

    async def put(self, key: str, content: IO[bytes], content_type: str) -> None:
        """Upload `content` from its current position (multipart beyond 8 MiB)."""
        try:
            await asyncio.to_thread(
                self._client.upload_fileobj,
                content,
                self.location.bucket,
                key,
                ExtraArgs={"ContentType": content_type},
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _unavailable(exc) from exc

    async def chunks(self, key: str, size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The object's content in chunks of `size`."""
        try:
            response = await asyncio.to_thread(
                self._client.get_object, Bucket=self.location.bucket, Key=key
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound("the artifact's content is missing from the object store") from exc
            raise _unavailable(exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise _unavailable(exc) from exc
        body: Any = response["Body"]
        try:
            while True:
                try:
                    data = await asyncio.to_thread(body.read, size)
                except (botocore.exceptions.BotoCoreError, OSError) as exc:
                    raise _unavailable(exc) from exc
                if not data:
                    return
                yield data
        finally:
            with contextlib.suppress(Exception):
                body.close()

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete these objects (a missing one is no error)."""
        for start in range(0, len(keys), MAX_DELETE_KEYS):
            batch = keys[start : start + MAX_DELETE_KEYS]
            try:
                response = await asyncio.to_thread(
                    self._client.delete_objects,
                    Bucket=self.location.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise _unavailable(exc) from exc
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise ArtifactStoreUnavailable(
                    f"the artifact store did not delete {len(errors)} objects "
                    f"({first.get('Key')}: {first.get('Code')} {first.get('Message')})"
                )

    async def exists(self, key: str) -> bool:
        """Whether the object exists (tests, operations)."""
        try:
            await asyncio.to_thread(self._client.head_object, Bucket=self.location.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise _unavailable(exc) from exc
        return True

    def close(self) -> None:
        self._client.close()
