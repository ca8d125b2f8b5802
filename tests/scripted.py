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
from google.rpc import error_details_pb2
from grpc_status import rpc_status

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
        session_token: str = "",
        heartbeats: bool = False,
    ) -> None:
        self.name = name
        self.accepts_batches = accepts_batches
        self.in_flight = list(in_flight)  # attempts to re-attach, sent with Register
        self.session_token = session_token  # Register.session_token (a reconnect's proof)
        self.capacity = capacity
        self.auto_ack = auto_ack  # acknowledge each assignment on receipt, as executors do
        self.outgoing: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
        # One queue per message kind, so waiting for one kind never drops another.
        self.incoming: dict[str, asyncio.Queue[Any]] = collections.defaultdict(asyncio.Queue)
        self.registered: pb.Registered | None = None
        self.is_registered = asyncio.Event()
        # Attempts assigned and not answered with a result: what its heartbeats list as running
        # (`heartbeats=True`), except the job ids in `omit` (an executor that forgot them).
        self.running: dict[str, pb.JobAttempt] = {a.job_id: a for a in in_flight}
        self.omit: set[str] = set()
        self.heartbeating = heartbeats  # set False to fall silent (a frozen executor)
        self.call = executor_service_pb2_grpc.ExecutorServiceStub(channel).Connect(self._requests())
        self.reader = asyncio.create_task(self._read())
        self.heartbeater = asyncio.create_task(self._heartbeat()) if heartbeats else None

    async def _requests(self) -> AsyncIterator[pb.ConnectRequest]:
        yield pb.ConnectRequest(
            register=pb.Register(
                name=self.name,
                capacity=self.capacity,
                job_types=["Work"],
                in_flight=self.in_flight,
                accepts_batches=self.accepts_batches,
                session_token=self.session_token,
            )
        )
        while (request := await self.outgoing.get()) is not None:
            yield request

    async def _read(self) -> None:
        async for response in self.call:
            kind = response.WhichOneof("message")
            assert kind is not None
            if kind == "registered":
                self.registered = response.registered
                self.is_registered.set()
            if kind == "assignment":
                self.running[response.assignment.attempt.job_id] = response.assignment.attempt
            if kind == "assignments":
                for each in response.assignments.assignments:
                    self.running[each.attempt.job_id] = each.attempt
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

    async def _heartbeat(self) -> None:
        """A Heartbeat every Registered.heartbeat_interval while `heartbeating`, listing
        `running` less `omit`, as an executor does."""
        await self.is_registered.wait()
        assert self.registered is not None
        interval = self.registered.heartbeat_interval.ToTimedelta().total_seconds()
        while True:
            await asyncio.sleep(interval)
            if self.heartbeating:
                running = [a for a in self.running.values() if a.job_id not in self.omit]
                self.send(heartbeat=pb.Heartbeat(running=running))

    def send(self, **message: Any) -> None:
        request = pb.ConnectRequest(**message)
        if request.WhichOneof("message") == "result":
            self.running.pop(request.result.attempt.job_id, None)
        self.outgoing.put_nowait(request)

    async def close(self) -> None:
        if self.heartbeater is not None:
            self.heartbeater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeater
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
    session_token: str = "",
    heartbeats: bool = False,
) -> ScriptedExecutor:
    """A registered ScriptedExecutor (closed by the `executors` fixture)."""
    executor = ScriptedExecutor(
        channel, name, capacity, auto_ack, in_flight, accepts_batches, session_token, heartbeats
    )
    executors.append(executor)
    registered = await executor.next("registered")
    assert registered.lease_duration.ToTimedelta().total_seconds() > 0
    return executor


async def ended(executor: ScriptedExecutor, within: float = 10.0) -> grpc.aio.AioRpcError:
    """The error that ended the executor's stream (its reader's)."""
    async with asyncio.timeout(within):
        try:
            await executor.reader
        except grpc.aio.AioRpcError as exc:
            return exc
    raise AssertionError("the stream ended without an error")


def violated_fields(err: grpc.aio.AioRpcError) -> list[str]:
    """The fields of the BadRequest field violations in the google.rpc.Status of a failed call."""
    status = rpc_status.from_call(err)
    assert status is not None, f"no google.rpc.Status in the trailers of {err.code()}"
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


def error_reason(err: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason in the google.rpc.Status of a failed call."""
    status = rpc_status.from_call(err)
    assert status is not None, f"no google.rpc.Status in the trailers of {err.code()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


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
