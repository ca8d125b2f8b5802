"""Calling any RPC by its descriptor, with a message (or a list of them for a client stream) or
with raw bytes, and reducing the answer to a status code.

Server streams (WatchJob, WatchJobs, GetArtifact) count as accepted once a first message
arrives; a Connect stream is read for `STREAM_LOOK` seconds (or to its end), since what the
executor sends after its Register may end it; either is cancelled then.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

import jobsched.v1
from tests.helpers import assert_eventually

Code = grpc.StatusCode
# Codes no request may ever get: the server failed, not the request.
FORBIDDEN = frozenset({Code.UNKNOWN, Code.INTERNAL, Code.UNIMPLEMENTED, Code.DATA_LOSS})
UNARY_DEADLINE = 10.0  # a unary call past this hangs: a failure, not slowness
STREAM_LOOK = 1.0


def services() -> Iterator[ServiceDescriptor]:
    """Every service of every generated module of jobsched.v1 (a new .proto's too)."""
    for module in pkgutil.iter_modules(jobsched.v1.__path__):
        if module.name.endswith("_pb2"):
            imported = importlib.import_module(f"jobsched.v1.{module.name}")
            yield from imported.DESCRIPTOR.services_by_name.values()


def methods() -> list[MethodDescriptor]:
    return [m for service in services() for m in service.methods]


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def client_send_race(err: grpc.aio.AioRpcError) -> bool:
    """grpc.aio's client reports INTERNAL "Internal error from Core" when it was still sending
    stream messages as the server ended the call (its failed send overrides the server's
    status, which the access log has): the client library's view, not the server's answer."""
    return err.code() == Code.INTERNAL and "SendMessageOperation" in (
        err.debug_error_string() or ""
    )


class AccessCodes(logging.Handler):
    """The code of every RPC as the server's access log records it (jobsched.rpc)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ended: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields.get("event") == "rpc":
            self.ended.append((str(fields["method"]), str(fields["code"])))

    async def code_of(self, method: str) -> str:
        """The code of the last call of `method` the server ended (waiting for it to end)."""

        async def logged() -> str:
            codes = [code for name, code in self.ended if name == method]
            assert codes, f"the server logged no end of {method}"
            return codes[-1]

        return await assert_eventually(logged, within=10, interval=0.002)


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str = ""
    # Messages the server sent before the end (a stream may answer, then refuse).
    answered: int = 0
    # The client library's own failure to send hid the server's status (`client_send_race`).
    send_race: bool = False

    @property
    def refused(self) -> bool:
        """Refused outright: nothing was answered and the code is not OK."""
        return self.code != Code.OK and self.answered == 0


async def _requests(messages: Sequence[Any]) -> AsyncIterator[Any]:
    for message in messages:
        yield message


def _serializers(method: MethodDescriptor, raw: bool) -> dict[str, Any]:
    if raw:  # identity: the bytes go on the wire as they are
        return {"request_serializer": None, "response_deserializer": None}
    from google.protobuf.message_factory import GetMessageClass

    response = GetMessageClass(method.output_type)
    return {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": response.FromString,
    }


async def call(
    channel: grpc.aio.Channel, method: MethodDescriptor, request: Any, *, raw: bool = False
) -> Outcome:
    """Send `request` (a message, a list of messages for client streams; bytes when `raw`)."""
    kwargs = _serializers(method, raw)
    name = path(method)
    streamed = list(request) if method.client_streaming else [request]
    try:
        if not method.client_streaming and not method.server_streaming:
            await channel.unary_unary(name, **kwargs)(request, timeout=UNARY_DEADLINE)
            return Outcome(Code.OK, answered=1)
        if method.client_streaming and not method.server_streaming:
            await channel.stream_unary(name, **kwargs)(_requests(streamed), timeout=UNARY_DEADLINE)
            return Outcome(Code.OK, answered=1)
        stream: Any
        if method.server_streaming and not method.client_streaming:
            stream = channel.unary_stream(name, **kwargs)(request)
            return await _look_at(stream, enough=1)  # the request was taken: it answers
        stream = channel.stream_stream(name, **kwargs)(_requests(streamed))
        return await _look_at(stream)  # what it sent after the first message counts too
    except grpc.aio.AioRpcError as err:
        return Outcome(err.code(), err.details() or "", send_race=client_send_race(err))


async def _look_at(stream: Any, enough: int | None = None) -> Outcome:
    """Read a server stream for up to STREAM_LOOK seconds (to its end if it ends, or `enough`
    messages), cancel it."""
    answered = 0
    try:
        async with asyncio.timeout(STREAM_LOOK):
            async for _ in stream:
                answered += 1
                if answered == enough:
                    break
        return Outcome(Code.OK, answered=answered)
    except TimeoutError:
        return Outcome(Code.OK, answered=answered)
    except grpc.aio.AioRpcError as err:
        return Outcome(err.code(), err.details() or "", answered, client_send_race(err))
    finally:
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await stream.code()
