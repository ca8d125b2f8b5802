"""A rogue executor stream next to a well-behaved one: results for attempts it was never given,
acknowledgements out of order and for other executors' attempts, floods of progress and log
lines for them, then a second Register. Every report is refused (a ResultAck with accepted
false, the others dropped) and logged, nothing is written, and the well-behaved executor runs
its jobs to the end meanwhile. Scripted streams (tests/scripted.py): the test decides every
message."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import executor_service_pb2_grpc, job_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.fuzz.snapshot import Snapshots, changed
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, error_reason, serving, state_of, submit

FLOOD = 2000


class RogueStream:
    """A Connect stream registered for a job type no job has: it is given nothing."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.outgoing: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
        self.outgoing.put_nowait(
            pb.ConnectRequest(register=pb.Register(name="rogue", capacity=4, job_types=["x"]))
        )
        self.call = executor_service_pb2_grpc.ExecutorServiceStub(channel).Connect(self._send())
        self.received: asyncio.Queue[pb.ConnectResponse] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _send(self) -> AsyncIterator[pb.ConnectRequest]:
        while (message := await self.outgoing.get()) is not None:
            yield message

    async def _read(self) -> None:
        async for response in self.call:
            await self.received.put(response)

    def send(self, **message: object) -> None:
        self.outgoing.put_nowait(pb.ConnectRequest(**message))  # type: ignore[arg-type]

    async def next(self, kind: str, within: float = 10.0) -> object:
        async with asyncio.timeout(within):
            while True:
                response = await self.received.get()
                if response.WhichOneof("message") == kind:
                    return getattr(response, kind)


async def test_a_rogue_stream_is_refused_writes_nothing_and_others_keep_running(
    db: Database, executors: list[ScriptedExecutor], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched")
    async with serving(db) as server, grpc.aio.insecure_channel(server.address) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        good = await connect(channel, executors, "good", 1)
        rogue = RogueStream(channel)
        await rogue.next("registered")
        (first,) = await submit(jobs, 1)
        given = (await good.next("assignment")).attempt  # acknowledged by `good` on receipt
        stranger = pb.JobAttempt(job_id=str(uuid.uuid4()), attempt=1)
        snapshots = await Snapshots.of(db)
        before = await snapshots.take()

        # Acks first, out of order: for an attempt of another executor, a later attempt, none.
        rogue.send(ack=pb.AssignmentAck(attempt=pb.JobAttempt(job_id=first, attempt=2)))
        rogue.send(acks=pb.AssignmentAckBatch(acks=[pb.AssignmentAck(attempt=given)] * 3))
        rogue.send(ack=pb.AssignmentAck(attempt=stranger))
        # Floods of progress and log lines for the other executor's attempt and a made-up one.
        for n in range(FLOOD):
            progress = job_pb2.Progress(percent=n % 100, step="rogue")
            rogue.send(progress=pb.ProgressReport(attempt=given, progress=progress))
        rogue.send(log=pb.LogReport(attempt=given, lines=["rogue"] * 100, first_line_number=1))
        rogue.send(log=pb.LogReport(attempt=stranger, lines=["rogue"], first_line_number=1))
        # Results for attempts it was never given: every outcome, alone and batched.
        refused = [
            pb.JobResult(attempt=given, result=b"rogue"),
            pb.JobResult(attempt=given, failure=pb.JobFailure(message="rogue", retryable=False)),
            pb.JobResult(attempt=given, cancelled=True),
            pb.JobResult(attempt=given, released=True),
            pb.JobResult(attempt=stranger, result=b"rogue"),
            pb.JobResult(attempt=pb.JobAttempt(job_id="not-a-uuid", attempt=-1), result=b""),
            pb.JobResult(attempt=given),  # no outcome
        ]
        for result in refused[:4]:
            rogue.send(result=result)
        rogue.send(results=pb.JobResultBatch(results=refused[4:]))
        acks = [await rogue.next("result_ack") for _ in refused]
        assert [ack.accepted for ack in acks] == [False] * len(refused)  # type: ignore[attr-defined]
        # A second Register ends its stream, and only its stream.
        rogue.send(register=pb.Register(name="rogue-2", capacity=1, job_types=["work"]))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await rogue.reader
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(raised.value) == "ALREADY_REGISTERED"
        await server.dispatcher.flush_progress()  # anything buffered would be written now

        assert changed(before, await snapshots.take()) == []
        job = await state_of(jobs, first)
        assert job.state == job_pb2.JOB_STATE_RUNNING
        assert job.executor == "good"
        assert job.progress.step != "rogue"
        logged = [getattr(r, "fields", {}) for r in caplog.records]
        results_refused = [f for f in logged if f.get("event") == "dispatch.result_refused"]
        assert len(results_refused) == len(refused)
        assert {f["executor"] for f in results_refused} == {"rogue"}
        dropped = [f for f in logged if f.get("event") == "dispatch.report_dropped"]
        assert [(f["executor"], f["kind"]) for f in dropped] == [("rogue", "ack")]  # the first

        async def counted() -> None:  # logged as the stream is removed, just after its end
            fields = [getattr(r, "fields", {}) for r in caplog.records]
            totals = [f for f in fields if f.get("event") == "dispatch.reports_dropped"]
            # acks: 1 + 3 + 1, progress: FLOOD, logs: 2
            assert [(f["executor"], f["count"]) for f in totals] == [("rogue", 5 + FLOOD + 2)]

        await assert_eventually(counted)

        # The well-behaved executor was never disturbed: its result is taken, and it runs more.
        good.send(result=pb.JobResult(attempt=given, result=b"done"))
        assert (await good.next("result_ack")).accepted
        assert (await state_of(jobs, first)).state == job_pb2.JOB_STATE_SUCCEEDED
        (second,) = await submit(jobs, 1)
        then = (await good.next("assignment")).attempt
        good.send(result=pb.JobResult(attempt=then, result=b"done"))
        assert (await good.next("result_ack")).accepted
        assert (await state_of(jobs, second)).state == job_pb2.JOB_STATE_SUCCEEDED
        rogue.outgoing.put_nowait(None)
