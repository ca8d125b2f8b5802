"""Log lines end to end: a handler's lines travel executor -> scheduler -> PostgreSQL and come
back through ListJobLogs, WatchJob, the client and the CLI (real gRPC, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from executor.handlers import Handler, JobContext, RetryableError, builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.v1 import executor_service_pb2 as xpb
from jobsched.v1 import executor_service_pb2_grpc, job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.helpers import assert_eventually

if TYPE_CHECKING:  # the async stub types exist only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub

MARKER = "[log truncated: only the first 1000 lines of an attempt are kept]"
S = job_pb2.JobState
StartExecutor = Callable[[dict[str, Handler]], Awaitable[Executor]]


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def start_executor(scheduler: SchedulerServer) -> AsyncIterator[StartExecutor]:
    """Start an in-process executor with extra handlers (by job type); stopped afterwards."""
    started: list[Executor] = []

    async def start(handlers: dict[str, Handler]) -> Executor:
        executor = Executor(
            [scheduler.address],
            name=f"logs-{len(started)}",
            capacity=4,
            registry=builtin_registry(extra=list(handlers.items())),
        )
        started.append(executor)
        await executor.start()
        await executor.wait_registered()
        return executor

    yield start
    for executor in started:
        await executor.stop(grace=1.0)


async def submit(stub: Stub, job_type: str, **fields: Any) -> str:
    response = await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type=job_type, **fields))
    )
    return str(response.job.id)


async def wait_for(stub: Stub, job_id: str, state: int, within: float = 15) -> job_pb2.Job:
    async def reached() -> job_pb2.Job:
        job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert job.state == state, job_pb2.JobState.Name(job.state)
        return job

    return await assert_eventually(reached, within=within)


async def all_lines(stub: Stub, job_id: str, attempt: int = 0) -> list[tuple[int, int, str]]:
    """(attempt, line number, text) of every stored line, walking ListJobLogs page by page."""
    lines: list[tuple[int, int, str]] = []
    token = ""
    while True:
        page = await stub.ListJobLogs(
            job_service_pb2.ListJobLogsRequest(
                id=job_id, attempt=attempt, page_size=1000, page_token=token
            )
        )
        lines += [(x.attempt, x.line_number, x.line) for x in page.lines]
        token = page.next_page_token
        if not token:
            return lines


async def stored_count(db: Database, job_id: str) -> int:
    async with db.read() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM job_logs WHERE job_id = :id"), {"id": job_id}
        )
    return int(count or 0)


def violation_fields(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


def reason_of(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def summary(items: list[job_service_pb2.WatchJobResponse]) -> list[tuple[Any, ...]]:
    """The stream without progress: snapshots, transitions and log lines, in order."""
    out: list[tuple[Any, ...]] = []
    for item in items:
        kind = item.WhichOneof("item")
        if kind == "snapshot":
            out.append(("snapshot", S.Name(item.snapshot.state)))
        elif kind == "event":
            e = item.event
            out.append(("event", S.Name(e.from_state), S.Name(e.to_state), e.attempt))
        elif kind == "log":
            out.append(("log", item.log.attempt, item.log.line_number, item.log.line))
    return out


class Watch:
    """A WatchJob stream read in the background, so the test can act while it runs."""

    def __init__(self, stub: Stub, job_id: str) -> None:
        self.items: list[job_service_pb2.WatchJobResponse] = []
        self.task = asyncio.create_task(self._read(stub, job_id))

    async def _read(self, stub: Stub, job_id: str) -> None:
        async for item in stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id)):
            self.items.append(item)

    async def wait_until(self, check: Callable[[list[tuple[Any, ...]]], bool]) -> None:
        async def seen() -> None:
            assert check(summary(self.items)), summary(self.items)

        await assert_eventually(seen, within=10)

    async def finished(self) -> list[job_service_pb2.WatchJobResponse]:
        async with asyncio.timeout(20):
            await self.task  # the stream ends by itself after the terminal event
        return self.items


def assert_log_sequences_are_the_last_event_sent(items: list[Any]) -> None:
    last = None
    for item in items:
        kind = item.WhichOneof("item")
        if kind in ("snapshot", "event"):
            last = item.sequence
        elif kind == "log":
            assert item.sequence == last


# --- ListJobLogs -----------------------------------------------------------------------------


async def test_a_handlers_lines_are_listed_in_order_with_numbers_and_pages(
    start_executor: StartExecutor, scheduler: SchedulerServer, jobs_stub: Stub
) -> None:
    async def chatty(ctx: JobContext) -> None:
        for n in range(1, 26):
            ctx.log(f"step {n} of 25")

    await start_executor({"chatty": chatty})
    job_id = await submit(jobs_stub, "chatty")
    await wait_for(jobs_stub, job_id, S.JOB_STATE_SUCCEEDED)

    pages: list[list[tuple[int, int, str]]] = []
    token = ""
    while True:
        page = await jobs_stub.ListJobLogs(
            job_service_pb2.ListJobLogsRequest(id=job_id, page_size=10, page_token=token)
        )
        pages.append([(x.attempt, x.line_number, x.line) for x in page.lines])
        assert all(x.HasField("create_time") for x in page.lines)
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [line for page in pages for line in page] == [
        (1, n, f"step {n} of 25") for n in range(1, 26)
    ]

    # The client walks the same pages.
    async with JobschedClient(scheduler.address) as client:
        through_client = [(x.attempt, x.line_number) async for x in client.logs(job_id)]
        assert through_client == [(1, n) for n in range(1, 26)]
        small_pages = [x.line_number async for x in client.logs(job_id, 1, page_size=7)]
        assert small_pages == list(range(1, 26))


async def test_lines_are_kept_per_attempt_across_a_retry_and_filtered_by_attempt(
    start_executor: StartExecutor, jobs_stub: Stub
) -> None:
    gate = asyncio.Event()

    async def flaky(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            ctx.log("first try")
            ctx.log("waiting")
            await gate.wait()
            ctx.log("giving up")
            raise RetryableError("not yet")
        for n in range(1, 4):
            ctx.log(f"second try {n}")

    await start_executor({"flaky": flaky})
    job_id = await submit(jobs_stub, "flaky")
    await wait_for(jobs_stub, job_id, S.JOB_STATE_RUNNING)
    watch = Watch(jobs_stub, job_id)
    # Lines of a running attempt arrive live, before anything ends it.
    await watch.wait_until(lambda s: ("log", 1, 2, "waiting") in s)
    gate.set()
    items = await watch.finished()

    assert summary(items) == [
        ("snapshot", "JOB_STATE_RUNNING"),
        ("log", 1, 1, "first try"),
        ("log", 1, 2, "waiting"),
        ("log", 1, 3, "giving up"),
        ("event", "JOB_STATE_RUNNING", "JOB_STATE_SCHEDULED", 1),
        ("event", "JOB_STATE_SCHEDULED", "JOB_STATE_QUEUED", 1),
        ("event", "JOB_STATE_QUEUED", "JOB_STATE_RUNNING", 2),
        ("log", 2, 1, "second try 1"),
        ("log", 2, 2, "second try 2"),
        ("log", 2, 3, "second try 3"),
        ("event", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED", 2),
    ]
    assert_log_sequences_are_the_last_event_sent(items)

    assert await all_lines(jobs_stub, job_id) == [
        (1, 1, "first try"),
        (1, 2, "waiting"),
        (1, 3, "giving up"),
        (2, 1, "second try 1"),
        (2, 2, "second try 2"),
        (2, 3, "second try 3"),
    ]
    assert [n for _, n, _ in await all_lines(jobs_stub, job_id, attempt=1)] == [1, 2, 3]
    assert [a for a, _, _ in await all_lines(jobs_stub, job_id, attempt=2)] == [2, 2, 2]
    assert await all_lines(jobs_stub, job_id, attempt=3) == []

    # A page token belongs to the filter it was issued for.
    first = await jobs_stub.ListJobLogs(job_service_pb2.ListJobLogsRequest(id=job_id, page_size=2))
    assert first.next_page_token
    rest = await jobs_stub.ListJobLogs(
        job_service_pb2.ListJobLogsRequest(id=job_id, page_size=2, page_token=first.next_page_token)
    )
    assert [(x.attempt, x.line_number) for x in rest.lines] == [(1, 3), (2, 1)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await jobs_stub.ListJobLogs(
            job_service_pb2.ListJobLogsRequest(
                id=job_id, attempt=2, page_token=first.next_page_token
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(raised.value) == ["page_token"]


async def test_1005_lines_keep_the_first_1000_and_the_truncation_marker(
    start_executor: StartExecutor, jobs_stub: Stub, db: Database
) -> None:
    async def verbose(ctx: JobContext) -> None:
        # In chunks the executor's own buffer (1000 lines) never overflows, so every line
        # reaches the scheduler and the bound applied is the scheduler's.
        for start in range(1, 1006, 250):
            for n in range(start, min(start + 250, 1006)):
                ctx.log(f"line {n}")
            if start + 250 <= 1000:

                async def stored(upto: int = start + 249) -> None:
                    assert await stored_count(db, ctx.job_id) == upto

                await assert_eventually(stored, within=10)

    await start_executor({"verbose": verbose})
    job_id = await submit(jobs_stub, "verbose")
    await wait_for(jobs_stub, job_id, S.JOB_STATE_SUCCEEDED, within=30)

    lines = await all_lines(jobs_stub, job_id)
    assert len(lines) == 1001
    assert lines[:1000] == [(1, n, f"line {n}") for n in range(1, 1001)]
    assert lines[1000] == (1, 1001, MARKER)


# --- the executor stream, scripted: re-sent numbers, the bound, other attempts ----------------


class ScriptedExecutor:
    """A raw ExecutorService stream, so a test can send exactly the reports it wants."""

    def __init__(self, channel: grpc.aio.Channel, job_type: str) -> None:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        self.call = stub.Connect()
        self.job_type = job_type

    async def register(self) -> None:
        await self.call.write(
            xpb.ConnectRequest(
                register=xpb.Register(name="scripted", capacity=1, job_types=[self.job_type])
            )
        )
        assert (await self.next("registered")).HasField("registered")

    async def next(self, kind: str) -> xpb.ConnectResponse:
        async with asyncio.timeout(10):
            while True:
                message = await self.call.read()
                assert isinstance(message, xpb.ConnectResponse), "the stream ended"
                if message.WhichOneof("message") == kind:
                    return message

    async def log(self, job_id: str, attempt: int, first: int, *lines: str) -> None:
        await self.call.write(
            xpb.ConnectRequest(
                log=xpb.LogReport(
                    attempt=xpb.JobAttempt(job_id=job_id, attempt=attempt),
                    lines=list(lines),
                    first_line_number=first,
                )
            )
        )


async def test_re_sent_numbers_are_stored_once_and_the_bound_holds_on_the_wire(
    channel: grpc.aio.Channel, jobs_stub: Stub, db: Database
) -> None:
    scripted = ScriptedExecutor(channel, "scripted")
    await scripted.register()
    job_id = await submit(jobs_stub, "scripted")
    assignment = (await scripted.next("assignment")).assignment
    attempt = assignment.attempt.attempt
    await scripted.call.write(xpb.ConnectRequest(ack=xpb.AssignmentAck(attempt=assignment.attempt)))

    await scripted.log(job_id, attempt, 1, "one", "two", "three")

    async def three_stored() -> None:
        assert await stored_count(db, job_id) == 3

    await assert_eventually(three_stored)
    # Sent again after they were written (2, 3) and twice before a write (5): first text wins.
    await scripted.log(job_id, attempt, 2, "TWO", "THREE", "four")
    await scripted.log(job_id, attempt, 5, "five")
    await scripted.log(job_id, attempt, 5, "FIVE")
    # Not this attempt: ignored. (Not numbered, 0, ends the stream INVALID_ARGUMENT: see
    # tests/e2e/test_protocol_rules.py.)
    await scripted.log(job_id, attempt + 1, 6, "other attempt")
    await scripted.log(str(uuid.uuid4()), attempt, 6, "other job")
    # Across the bound: 999 and 1000 are kept, 1001 becomes the marker, 1002 is dropped.
    await scripted.log(job_id, attempt, 999, "l999", "l1000", "l1001", "l1002")
    await scripted.call.write(
        xpb.ConnectRequest(result=xpb.JobResult(attempt=assignment.attempt, result=b"done"))
    )
    assert (await scripted.next("result_ack")).result_ack.accepted
    # After its result the attempt is no longer running here: a late line is not accepted.
    await scripted.log(job_id, attempt, 6, "too late")
    # Lines of the next job, read after the late one, being stored shows that it was handled.
    next_id = await submit(jobs_stub, "scripted")
    next_attempt = (await scripted.next("assignment")).assignment.attempt
    await scripted.call.write(xpb.ConnectRequest(ack=xpb.AssignmentAck(attempt=next_attempt)))
    await scripted.log(next_id, next_attempt.attempt, 1, "next job")

    async def next_stored() -> None:
        assert await stored_count(db, next_id) == 1

    await assert_eventually(next_stored)
    await scripted.call.done_writing()

    assert await all_lines(jobs_stub, job_id) == [
        (1, 1, "one"),
        (1, 2, "two"),
        (1, 3, "three"),
        (1, 4, "four"),
        (1, 5, "five"),
        (1, 999, "l999"),
        (1, 1000, "l1000"),
        (1, 1001, MARKER),
    ]


# --- WatchJob --------------------------------------------------------------------------------


async def test_watch_delivers_an_attempts_lines_before_its_terminal_event(
    start_executor: StartExecutor, jobs_stub: Stub
) -> None:
    gate = asyncio.Event()

    async def gated(ctx: JobContext) -> dict[str, bool]:
        ctx.log("started")
        await gate.wait()
        # The last lines leave with the result: they must still come before the outcome.
        for n in range(2, 7):
            ctx.log(f"line {n}")
        return {"ok": True}

    await start_executor({"gated": gated})
    job_id = await submit(jobs_stub, "gated")
    await wait_for(jobs_stub, job_id, S.JOB_STATE_RUNNING)
    watch = Watch(jobs_stub, job_id)
    await watch.wait_until(lambda s: ("log", 1, 1, "started") in s)
    gate.set()
    items = await watch.finished()

    assert summary(items) == [
        ("snapshot", "JOB_STATE_RUNNING"),
        ("log", 1, 1, "started"),
        *[("log", 1, n, f"line {n}") for n in range(2, 7)],
        ("event", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED", 1),
    ]
    assert_log_sequences_are_the_last_event_sent(items)

    # A watch of the finished job: snapshot, then the stored lines of its current attempt.
    again = Watch(jobs_stub, job_id)
    assert summary(await again.finished()) == [
        ("snapshot", "JOB_STATE_SUCCEEDED"),
        ("log", 1, 1, "started"),
        *[("log", 1, n, f"line {n}") for n in range(2, 7)],
    ]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"id": "not-a-uuid"}, "id"),
        ({"id": ""}, "id"),
        ({"attempt": -1}, "attempt"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "garbage!"}, "page_token"),
        ({"page_token": "eyJ2IjoxfQ"}, "page_token"),  # {"v":1}: well-formed, no cursor
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    jobs_stub: Stub, request_fields: dict[str, Any], field: str
) -> None:
    job_id = await submit(jobs_stub, "work")
    request = job_service_pb2.ListJobLogsRequest(**{"id": job_id, **request_fields})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await jobs_stub.ListJobLogs(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(raised.value) == [field]


async def test_an_unknown_job_or_another_tenants_is_not_found(jobs_stub: Stub) -> None:
    job_id = await submit(jobs_stub, "work")
    assert (
        await jobs_stub.ListJobLogs(job_service_pb2.ListJobLogsRequest(id=job_id))
    ).lines == []  # a job without lines is an empty list, not an error
    for request, metadata in (
        (job_service_pb2.ListJobLogsRequest(id=str(uuid.uuid4())), ()),
        (job_service_pb2.ListJobLogsRequest(id=job_id), (("x-jobsched-tenant", "other"),)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await jobs_stub.ListJobLogs(request, metadata=metadata)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert reason_of(raised.value) == "JOB_NOT_FOUND"


# --- the CLI ---------------------------------------------------------------------------------


async def jobsched_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from jobsched.cli import main; sys.exit(main())",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_logs_prints_lines_by_attempt_and_as_json(
    start_executor: StartExecutor, scheduler: SchedulerServer, jobs_stub: Stub
) -> None:
    async def twice(ctx: JobContext) -> None:
        ctx.log(f"hello from attempt {ctx.attempt}")
        ctx.log("[bold]not markup[/bold]")
        if ctx.attempt == 1:
            raise RetryableError("again")

    await start_executor({"twice": twice})
    job_id = await submit(jobs_stub, "twice")
    await wait_for(jobs_stub, job_id, S.JOB_STATE_SUCCEEDED)
    address = scheduler.address

    code, out, err = await jobsched_cli("--address", address, "logs", job_id)
    assert code == 0, err
    assert out.splitlines() == [
        "attempt 1 | hello from attempt 1",
        "attempt 1 | [bold]not markup[/bold]",
        "attempt 2 | hello from attempt 2",
        "attempt 2 | [bold]not markup[/bold]",
    ]

    code, out, err = await jobsched_cli("--address", address, "logs", job_id, "--attempt", "2")
    assert code == 0, err
    assert out.splitlines() == [
        "attempt 2 | hello from attempt 2",
        "attempt 2 | [bold]not markup[/bold]",
    ]

    code, out, err = await jobsched_cli(
        "--address", address, "logs", job_id, "--attempt", "2", "--json"
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["attempt"], r["line_number"], r["line"]) for r in records] == [
        (2, 1, "hello from attempt 2"),
        (2, 2, "[bold]not markup[/bold]"),
    ]
    assert all("create_time" in r for r in records)

    code, _, err = await jobsched_cli("--address", address, "logs", str(uuid.uuid4()))
    assert code == 3, err
    code, _, err = await jobsched_cli("--address", address, "logs", "not-a-uuid")
    assert code == 2, err
    assert "id" in err
    code, _, err = await jobsched_cli("--address", address, "logs", job_id, "--attempt", "-1")
    assert code == 2, err


async def test_cli_watch_prints_the_log_lines(
    start_executor: StartExecutor, scheduler: SchedulerServer
) -> None:
    async def greeter(ctx: JobContext) -> None:
        ctx.log("hello")
        ctx.log("bye")

    await start_executor({"greeter": greeter})
    code, out, err = await jobsched_cli(
        "--address", scheduler.address, "submit", "--type", "greeter", "--watch"
    )
    assert code == 0, err + out
    assert "attempt 1 | hello" in out
    assert "attempt 1 | bye" in out
    assert out.index("attempt 1 | hello") < out.index("attempt 1 | bye") < out.index("succeeded")
