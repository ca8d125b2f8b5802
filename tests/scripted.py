"""A scripted executor for e2e tests: one raw Connect stream whose every message the test sees
and sends, so it can play protocol situations a real executor would not (never acknowledging,
stale results, reconnecting with in-flight attempts)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import executor_service_pb2_grpc, job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer, ServerSettings
from scheduler.store.database import Database

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub


class ScriptedExecutor:
    """One Connect stream; received messages are queued for the test to act on."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        name: str,
        capacity: int,
        auto_ack: bool = True,
        in_flight: Sequence[pb.JobAttempt] = (),
        accepts_batches: bool = False,
    ) -> None:
        self.name = name
        self.accepts_batches = accepts_batches
        self.in_flight = list(in_flight)  # attempts to re-attach, sent with Register
        self.capacity = capacity
        self.auto_ack = auto_ack  # acknowledge each assignment on receipt, as executors do
        self.outgoing: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
        # One queue per message kind, so waiting for one kind never drops another.
        self.incoming: dict[str, asyncio.Queue[Any]] = collections.defaultdict(asyncio.Queue)
        self.call = executor_service_pb2_grpc.ExecutorServiceStub(channel).Connect(self._requests())
        self.reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[pb.ConnectRequest]:
        yield pb.ConnectRequest(
            register=pb.Register(
                name=self.name,
                capacity=self.capacity,
                job_types=["Work"],
                in_flight=self.in_flight,
                accepts_batches=self.accepts_batches,
            )
        )
        while (request := await self.outgoing.get()) is not None:
            yield request

    async def _read(self) -> None:
        async for response in self.call:
            kind = response.WhichOneof("message")
            assert kind is not None
            if kind == "assignment" and self.auto_ack:
                self.send(ack=pb.AssignmentAck(attempt=response.assignment.attempt))
            if kind == "assignments" and self.auto_ack:
                acks = [
                    pb.AssignmentAck(attempt=a.attempt) for a in response.assignments.assignments
                ]
                self.send(acks=pb.AssignmentAckBatch(acks=acks))
            await self.incoming[kind].put(getattr(response, kind))

    async def next(self, kind: str, within: float = 10.0) -> Any:
        """The next message of `kind` (registered, assignment, cancel, result_ack, ping)."""
        async with asyncio.timeout(within):
            return await self.incoming[kind].get()

    def send(self, **message: Any) -> None:
        self.outgoing.put_nowait(pb.ConnectRequest(**message))

    async def close(self) -> None:
        self.outgoing.put_nowait(None)
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self.reader


async def connect(
    channel: grpc.aio.Channel,
    executors: list[ScriptedExecutor],
    name: str,
    capacity: int,
    auto_ack: bool = True,
    in_flight: Sequence[pb.JobAttempt] = (),
    accepts_batches: bool = False,
) -> ScriptedExecutor:
    executor = ScriptedExecutor(channel, name, capacity, auto_ack, in_flight, accepts_batches)
    executors.append(executor)
    registered = await executor.next("registered")
    assert registered.lease_duration.ToTimedelta().total_seconds() > 0
    return executor


async def submit(stub: Stub, count: int) -> list[str]:
    response = await stub.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(
            jobs=[job_pb2.JobSpec(type="work", payload=b"{}") for _ in range(count)]
        )
    )
    return [j.id for j in response.jobs]


async def state_of(stub: Stub, job_id: str) -> job_pb2.Job:
    response = await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))
    return response.job


@contextlib.asynccontextmanager
async def serving(
    db: Database, interceptors: Sequence[grpc.aio.ServerInterceptor] = (), **settings: Any
) -> AsyncIterator[SchedulerServer]:
    """A scheduler on a free port with these ServerSettings, stopped afterwards."""
    server = SchedulerServer(
        db,
        ServerSettings(**{"listen": "127.0.0.1:0", "shutdown_grace": 1.0, **settings}),
        interceptors=interceptors,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
