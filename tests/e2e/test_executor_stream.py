"""The executor's side of the Connect stream, against a scripted scheduler (a real gRPC server on
port 0 whose every message the test sees and sends): what the executor puts on the wire, in which
order, and how it answers a refused registration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from executor.handlers import (
    BUILTIN_HANDLERS,
    Handler,
    HandlerRegistry,
    JobContext,
    builtin_registry,
)
from executor.runner import Executor
from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import executor_service_pb2_grpc
from tests.helpers import assert_eventually

End = tuple[grpc.StatusCode, str]


class ScriptedStream:
    """One Connect stream as the scheduler sees it."""

    def __init__(self) -> None:
        self.received: list[pb.ConnectRequest] = []
        self.arrived = asyncio.Event()
        self.outgoing: asyncio.Queue[pb.ConnectResponse | End | None] = asyncio.Queue()

    async def read(self, requests: AsyncIterator[pb.ConnectRequest]) -> None:
        async for request in requests:
            self.received.append(request)
            self.arrived.set()

    @property
    def register(self) -> pb.Register:
        assert self.received, "nothing received"
        assert self.received[0].WhichOneof("message") == "register"
        return self.received[0].register

    def messages(self) -> Iterator[tuple[str, Any]]:
        """(kind, message) of everything received, batches taken apart, in order."""
        for request in self.received:
            kind = request.WhichOneof("message")
            if kind == "acks":
                yield from (("ack", a) for a in request.acks.acks)
            elif kind == "results":
                yield from (("result", r) for r in request.results.results)
            else:
                yield str(kind), getattr(request, str(kind))

    async def wait_for(self, kind: str, within: float = 10.0) -> Any:
        """The first received message of `kind`, waiting for it."""
        async with asyncio.timeout(within):
            while True:
                for found, message in self.messages():
                    if found == kind:
                        return message
                self.arrived.clear()
                await self.arrived.wait()

    def send(self, **message: Any) -> None:
        self.outgoing.put_nowait(pb.ConnectResponse(**message))

    def registered(self, **fields: Any) -> None:
        fields.setdefault("session_id", "session-1")
        fields.setdefault("heartbeat_interval", duration_pb2.Duration(seconds=3600))
        self.send(registered=pb.Registered(**fields))

    def end(self, code: grpc.StatusCode, details: str = "") -> None:
        self.outgoing.put_nowait((code, details))


class ScriptedScheduler(executor_service_pb2_grpc.ExecutorServiceServicer):
    def __init__(self) -> None:
        self.streams: asyncio.Queue[ScriptedStream] = asyncio.Queue()

    async def Connect(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], context: Any
    ) -> AsyncIterator[pb.ConnectResponse]:
        stream = ScriptedStream()
        reader = asyncio.create_task(stream.read(request_iterator))
        # Like a scheduler, it ends the stream once the executor has half-closed it.
        reader.add_done_callback(lambda _: stream.outgoing.put_nowait(None))
        await self.streams.put(stream)
        try:
            while (item := await stream.outgoing.get()) is not None:
                if isinstance(item, pb.ConnectResponse):
                    yield item
                else:
                    await context.abort(*item)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader

    async def next_stream(self, within: float = 10.0) -> ScriptedStream:
        async with asyncio.timeout(within):
            stream = await self.streams.get()
        await stream.wait_for("register")
        return stream


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedScheduler, str]]:
    server = grpc.aio.server()
    scheduler = ScriptedScheduler()
    executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server(scheduler, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield scheduler, f"127.0.0.1:{port}"
    await server.stop(0)


@contextlib.asynccontextmanager
async def running(
    address: str, registry: HandlerRegistry, **options: Any
) -> AsyncIterator[Executor]:
    options = {"name": "scripted-exec", "capacity": 2, "backoff_max": 0.2, **options}
    executor = Executor([address], registry=registry, **options)
    await executor.start()
    try:
        yield executor
    finally:
        await executor.stop(grace=1.0)


def assignment(job_id: str, job_type: str, attempt: int = 1) -> pb.Assignment:
    return pb.Assignment(attempt=pb.JobAttempt(job_id=job_id, attempt=attempt), type=job_type)


FIRST_SEEN = threading.Event()  # the test saw the first report go out


async def steps_async(ctx: JobContext) -> str:
    ctx.progress(10, step="first")
    await asyncio.to_thread(FIRST_SEEN.wait, 10)
    ctx.progress(20, step="second")
    ctx.progress(30, step="last")
    return "done"


def steps_plain(ctx: JobContext) -> str:
    ctx.progress(10, step="first")
    FIRST_SEEN.wait(timeout=10)
    ctx.progress(20, step="second")
    ctx.progress(30, step="last")
    return "done"


@pytest.mark.parametrize("handler", [steps_async, steps_plain], ids=["async", "plain"])
async def test_the_last_progress_goes_out_before_the_result(
    scripted: tuple[ScriptedScheduler, str], handler: Handler
) -> None:
    scheduler, address = scripted
    FIRST_SEEN.clear()
    # An hour between progress reports: only the first goes out when reported, the rest is
    # held, and the latest held value must go out with the result, before it.
    async with running(address, HandlerRegistry({"steps": handler}), progress_interval=3600):
        stream = await scheduler.next_stream()
        stream.registered()
        stream.send(assignment=assignment("j1", "steps"))
        first = await stream.wait_for("progress")
        assert first.progress.percent == 10
        FIRST_SEEN.set()
        result = await stream.wait_for("result")
        assert result.result == b"done"
        sent = [
            (kind, (m.progress.percent, m.progress.step) if kind == "progress" else None)
            for kind, m in stream.messages()
            if kind in ("ack", "progress", "result")
        ]
        assert sent == [
            ("ack", None),
            ("progress", (10.0, "first")),
            ("progress", (30.0, "last")),
            ("result", None),
        ]
        stream.send(result_ack=pb.ResultAck(attempt=result.attempt, accepted=True))


async def test_results_beyond_the_limit_of_registered_fail_without_retry(
    scripted: tuple[ScriptedScheduler, str],
) -> None:
    scheduler, address = scripted

    async def sized(ctx: JobContext) -> bytes:
        return b"x" * int(ctx.payload)

    async with running(address, HandlerRegistry({"sized": sized})):
        stream = await scheduler.next_stream()
        stream.registered(max_result_bytes=1000)
        for job_id, size in (("fits", 1000), ("too-big", 1001)):
            message = assignment(job_id, "sized")
            message.payload = str(size).encode()
            stream.send(assignment=message)

        async def both() -> dict[str, pb.JobResult]:
            results = {m.attempt.job_id: m for kind, m in stream.messages() if kind == "result"}
            assert len(results) == 2
            return results

        results = await assert_eventually(both)
        assert results["fits"].result == b"x" * 1000
        failure = results["too-big"].failure
        assert not failure.retryable
        assert failure.message == (
            "result is 1001 bytes; at most 1000 are allowed "
            "(store larger output as an artifact and return a reference)"
        )


async def test_without_a_limit_in_registered_results_are_capped_at_one_mebibyte(
    scripted: tuple[ScriptedScheduler, str],
) -> None:
    scheduler, address = scripted

    async def sized(ctx: JobContext) -> bytes:
        return b"x" * int(ctx.payload)

    async with running(address, HandlerRegistry({"sized": sized})):
        stream = await scheduler.next_stream()
        stream.registered()  # max_result_bytes 0: the default
        message = assignment("big", "sized")
        message.payload = str(2 * 1024 * 1024).encode()
        stream.send(assignment=message)
        result = await stream.wait_for("result")
        assert result.WhichOneof("outcome") == "failure"
        assert not result.failure.retryable
        assert result.failure.message == (
            "result is 2097152 bytes; at most 1048576 are allowed "
            "(store larger output as an artifact and return a reference)"
        )


async def test_the_session_token_goes_back_with_the_reconnect_and_is_never_logged(
    scripted: tuple[ScriptedScheduler, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobsched.executor")
    scheduler, address = scripted
    release = asyncio.Event()

    async def waits(ctx: JobContext) -> str:
        await release.wait()
        return "finished"

    token = "secret-token-8f3a"
    async with running(address, HandlerRegistry({"waits": waits})) as executor:
        first = await scheduler.next_stream()
        assert first.register.session_token == ""  # a first start has none
        first.registered(session_token=token)
        first.send(assignment=assignment("j1", "waits"))
        await first.wait_for("ack")
        first.end(grpc.StatusCode.UNAVAILABLE, "scheduler restarting")

        second = await scheduler.next_stream()
        assert second.register.session_token == token
        assert [(a.job_id, a.attempt) for a in second.register.in_flight] == [("j1", 1)]
        second.registered(session_id="session-2", session_token="secret-token-next")
        await assert_eventually(_registered_as(executor, "session-2"))
        release.set()
        assert (await second.wait_for("result")).result == b"finished"

    logged = [f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records]
    assert logged
    assert not [line for line in logged if "secret-token" in line]


def _registered_as(executor: Executor, session_id: str) -> Any:
    async def check() -> None:
        assert executor.registered
        assert executor.session_id == session_id

    return check


async def test_a_name_in_use_is_logged_once_per_refusal_and_retried(
    scripted: tuple[ScriptedScheduler, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched.executor")
    scheduler, address = scripted
    async with running(address, builtin_registry(), name="busy-name") as executor:
        for _ in range(2):
            refused = await scheduler.next_stream()
            assert refused.register.name == "busy-name"
            refused.end(grpc.StatusCode.ALREADY_EXISTS, "executor name busy-name is taken")
        accepted = await scheduler.next_stream()
        accepted.registered(session_id="at-last")
        await assert_eventually(_registered_as(executor, "at-last"))

    refusals = [
        r for r in caplog.records if getattr(r, "fields", {}).get("event") == "executor.name_in_use"
    ]
    assert len(refusals) == 2
    assert all(r.levelno == logging.ERROR for r in refusals)
    assert refusals[0].getMessage() == (
        "executor name busy-name is in use by a live session; retrying"
    )


class CursedRegistry(HandlerRegistry):
    """A registry whose lookup fails unexpectedly for one type (standing for any bug on the
    executor's assignment path)."""

    def get(self, job_type: str) -> Handler:
        if job_type == "cursed":
            raise RuntimeError("lookup exploded")
        return super().get(job_type)


async def test_an_unexpected_error_taking_an_assignment_fails_that_attempt_only(
    scripted: tuple[ScriptedScheduler, str],
) -> None:
    scheduler, address = scripted
    registry = CursedRegistry(BUILTIN_HANDLERS)
    async with running(address, registry) as executor:
        stream = await scheduler.next_stream()
        stream.registered()
        stream.send(assignment=assignment("bad", "cursed"))
        failed = await stream.wait_for("result")
        assert failed.attempt.job_id == "bad"
        assert failed.failure.retryable
        assert "lookup exploded" in failed.failure.message
        # The same stream goes on taking work.
        stream.send(assignment=assignment("good", "noop"))

        async def good_done() -> None:
            results = {m.attempt.job_id: m for kind, m in stream.messages() if kind == "result"}
            assert "good" in results
            assert results["good"].result == b""

        await assert_eventually(good_done)
        assert executor.session_id == "session-1"
        assert scheduler.streams.empty()  # never reconnected
