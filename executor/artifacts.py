"""Artifact uploads from handlers (`ctx.upload`): each one an UploadArtifact call of its own to
the scheduler the executor is registered with, never the Connect stream, so a large file cannot
hold up heartbeats, acks or results.

The call carries the executor's name and the session token of its current registration (any
replica verifies it) with the attempt; the scheduler refuses an attempt that is not running on
this executor (FAILED_PRECONDITION). Calls run on the handler loop, on channels opened there;
plain ``def`` handlers, which run in pool threads, call `upload_blocking` (``ctx.upload_blocking``),
which runs the upload on that loop and waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from jobsched import keepalive
from jobsched.artifacts import Artifact, ArtifactSource, upload_requests
from jobsched.client import balancing
from jobsched.errors import UnavailableError, from_rpc_error
from jobsched.tls import ClientTLS, open_channel
from jobsched.tokens import bearer_metadata
from jobsched.v1 import artifact_service_pb2 as pb
from jobsched.v1 import artifact_service_pb2_grpc


class ArtifactUploader:
    """Uploads artifacts for the attempts of one executor. `credentials()` gives the address of
    the scheduler the executor is registered with and its session token ("" when it is not)."""

    def __init__(
        self,
        name: str,
        credentials: Callable[[], tuple[str, str]],
        *,
        tls: ClientTLS | None = None,
        token: str | None = None,
    ) -> None:
        self.name = name
        self._credentials = credentials
        # The same transport and API key as the executor's Connect stream.
        self._tls = tls
        self._metadata = bearer_metadata(token)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The handler loop: channels are opened and calls made there."""
        self._loop = loop

    async def upload(
        self,
        job_id: str,
        attempt: int,
        name: str,
        source: ArtifactSource,
        content_type: str | None = None,
    ) -> Artifact:
        address, token = self._credentials()
        if not address or not token:
            raise UnavailableError("the executor is not registered with a scheduler")
        channel = self._channels.get(address)
        if channel is None:
            options = [*keepalive.channel_options(), *balancing(address)]
            channel = self._channels[address] = open_channel(address, options, self._tls)
        header = pb.UploadArtifactHeader(
            job_id=job_id,
            attempt=attempt,
            executor=self.name,
            session_token=token,
            name=name,
            content_type=content_type or "",
        )
        stub = artifact_service_pb2_grpc.ArtifactServiceStub(channel)
        try:
            response = await stub.UploadArtifact(
                upload_requests(header, source), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from err
        return Artifact.from_proto(response.artifact)

    def upload_blocking(
        self,
        job_id: str,
        attempt: int,
        name: str,
        source: ArtifactSource,
        content_type: str | None = None,
    ) -> Artifact:
        """`upload` from a thread other than the handler loop's (a plain handler's)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the executor has not started")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("upload_blocking would block the handler loop: await ctx.upload")
        future = asyncio.run_coroutine_threadsafe(
            self.upload(job_id, attempt, name, source, content_type), loop
        )
        return future.result()

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()
