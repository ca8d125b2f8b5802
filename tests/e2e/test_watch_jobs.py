"""WatchJobs end to end: a SchedulerServer on 127.0.0.1:0, real gRPC, real PostgreSQL and, where
jobs must run, a real in-process `executor.runner.Executor` whose handlers the test steers.

Every "is not sent" is checked with a marker: a matching change made after the one that must not
be sent. Changes are delivered in the order they were notified, so when the marker arrives first,
the earlier change was filtered out rather than still on its way.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from executor.handlers import HandlerRegistry, JobContext, RetryableError, builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.api.job_service import utcnow
from scheduler.domain.states import JobState
from scheduler.server import SchedulerServer, ServerSettings
from scheduler.store.attempts import Success, claim_jobs, succeed_attempts
from scheduler.store.database import Database
from scheduler.store.jobs import MAX_CHANGE_TRANSITIONS, Guard, JobStore
from tests.helpers import assert_eventually

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub
    WatchCall = grpc.aio.UnaryStreamCall[
        job_service_pb2.WatchJobsRequest, job_service_pb2.WatchJobsResponse
    ]

S = job_pb2.JobState
TENANT_KEY = "x-jobsched-tenant"
ITEM_TIMEOUT = 10.0


def as_tenant(tenant: str) -> tuple[tuple[str, str], ...]:
    return ((TENANT_KEY, tenant),)


class Steering:
    """The `steered` handler: it runs until the test tells it what to do, through a queue per
    job: a number reports that progress percent, "fail" fails the attempt, "finish" succeeds."""

    def __init__(self) -> None:
        self.commands: defaultdict[str, asyncio.Queue[float | str]] = defaultdict(asyncio.Queue)

    def send(self, job_id: str, command: float | str) -> None:
        self.commands[job_id].put_nowait(command)

    async def handler(self, ctx: JobContext) -> bytes:
        while True:
            command = await self.commands[ctx.job_id].get()
            if command == "finish":
                return b"done"
            if command == "fail":
                raise RetryableError("told to fail")
            ctx.progress(float(command), step=f"at {command}")


@pytest.fixture
def steering() -> Steering:
    return Steering()


@pytest.fixture
async def start_executor(scheduler: SchedulerServer, steering: Steering) -> AsyncIterator[Any]:
    """Start an executor (noop, sleep, steered) when the test wants it to begin claiming."""
    started: list[Executor] = []

    async def start() -> Executor:
        registry: HandlerRegistry = builtin_registry([("steered", steering.handler)])
        executor = Executor([scheduler.address], name="watch-exec", capacity=8, registry=registry)
        await executor.start()
        await executor.wait_registered()
        started.append(executor)
        return executor

    yield start
    for executor in started:
        await executor.stop(grace=1.0)


async def watch_jobs(stub: Stub, tenant: str = "default", **request: Any) -> WatchCall:
    """Open a WatchJobs stream and wait for its `subscribed` item."""
    call = stub.WatchJobs(job_service_pb2.WatchJobsRequest(**request), metadata=as_tenant(tenant))
    first = await asyncio.wait_for(call.read(), ITEM_TIMEOUT)
    assert isinstance(first, job_service_pb2.WatchJobsResponse)
    assert first.WhichOneof("item") == "subscribed"
    assert first.subscribed
    return call


async def next_item(call: WatchCall) -> job_service_pb2.WatchJobsResponse:
    item = await asyncio.wait_for(call.read(), ITEM_TIMEOUT)
    assert isinstance(item, job_service_pb2.WatchJobsResponse), f"stream ended: {item}"
    return item


async def next_job(call: WatchCall) -> job_pb2.Job:
    item = await next_item(call)
    assert item.WhichOneof("item") == "job", item
    return item.job


async def submit(stub: Stub, tenant: str = "default", **spec: Any) -> job_pb2.Job:
    spec.setdefault("type", "steered")
    response = await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(**spec)), metadata=as_tenant(tenant)
    )
    return response.job


async def wait_state(stub: Stub, job_id: str, state: int) -> job_pb2.Job:
    async def reached() -> job_pb2.Job:
        job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert job.state == state
        return job

    return await assert_eventually(reached, within=ITEM_TIMEOUT)


def violated_fields(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


# --- filters --------------------------------------------------------------------------------


async def test_changes_of_the_watched_queue_are_sent_and_others_are_not(
    jobs_stub: Stub,
) -> None:
    call = await watch_jobs(jobs_stub, queue="Reports")  # names are case-insensitive
    try:
        await submit(jobs_stub, queue="billing")
        wanted = await submit(jobs_stub, queue="reports", payload=b"secret")
        await submit(jobs_stub, queue="billing")
        marker = await submit(jobs_stub, queue="reports")

        job = await next_job(call)
        assert (job.id, job.queue, job.state) == (wanted.id, "reports", S.JOB_STATE_QUEUED)
        assert job.payload == b""  # list items carry no payload
        assert (await next_job(call)).id == marker.id
    finally:
        call.cancel()


async def test_changes_of_the_watched_type_are_sent_and_others_are_not(
    jobs_stub: Stub,
) -> None:
    call = await watch_jobs(jobs_stub, type="Report.Build")
    try:
        await submit(jobs_stub, type="email.send")
        wanted = await submit(jobs_stub, type="report.build")
        await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=wanted.id))
        other = await submit(jobs_stub, type="email.send")
        await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=other.id))
        marker = await submit(jobs_stub, type="report.build")

        seen = [await next_job(call)]
        while seen[-1].id != marker.id:
            seen.append(await next_job(call))
        assert {j.type for j in seen} == {"report.build"}
        # Two changes of `wanted`, possibly read together as its latest row.
        states = [j.state for j in seen if j.id == wanted.id]
        assert states in ([S.JOB_STATE_QUEUED, S.JOB_STATE_CANCELLED], [S.JOB_STATE_CANCELLED])
    finally:
        call.cancel()


async def test_a_state_filter_sends_matching_changes_and_a_job_leaving_once(
    jobs_stub: Stub, steering: Steering, start_executor: Any
) -> None:
    call = await watch_jobs(jobs_stub, states=[S.JOB_STATE_QUEUED])
    try:
        job = await submit(jobs_stub)
        first = await next_job(call)
        assert (first.id, first.state) == (job.id, S.JOB_STATE_QUEUED)

        await start_executor()  # claims it: it leaves QUEUED
        left = await next_job(call)
        assert (left.id, left.state) == (job.id, S.JOB_STATE_RUNNING)

        # More changes outside the watched states: progress, then success. Not sent.
        steering.send(job.id, 40)

        async def progressed() -> None:
            got = await jobs_stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job.id))
            assert got.job.progress.percent == 40

        await assert_eventually(progressed, within=ITEM_TIMEOUT)
        steering.send(job.id, "finish")
        await wait_state(jobs_stub, job.id, S.JOB_STATE_SUCCEEDED)

        marker = await submit(jobs_stub)  # steered: it stays RUNNING once claimed
        after = await next_job(call)
        assert after.id == marker.id  # nothing more of `job` came first
        assert after.state in (S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING)  # QUEUED, or leaving it
        steering.send(marker.id, "finish")
    finally:
        call.cancel()


async def test_a_job_that_left_the_watched_states_and_comes_back_is_sent_again(
    jobs_stub: Stub, steering: Steering, start_executor: Any
) -> None:
    await start_executor()
    call = await watch_jobs(jobs_stub, states=["JOB_STATE_RUNNING"], type="steered")
    try:
        job = await submit(jobs_stub, max_attempts=2)
        running = await next_job(call)
        assert (running.id, running.state, running.attempt) == (job.id, S.JOB_STATE_RUNNING, 1)

        steering.send(job.id, "fail")  # RUNNING -> SCHEDULED (retry backoff), then back
        backoff = await next_job(call)
        assert (backoff.id, backoff.state) == (job.id, S.JOB_STATE_SCHEDULED)
        assert "told to fail" in backoff.last_error

        again = await next_job(call)
        assert (again.id, again.state, again.attempt) == (job.id, S.JOB_STATE_RUNNING, 2)
        steering.send(job.id, "finish")
        done = await next_job(call)
        assert (done.id, done.state) == (job.id, S.JOB_STATE_SUCCEEDED)
    finally:
        call.cancel()


async def test_a_job_running_before_the_subscription_is_sent_when_it_leaves(
    jobs_stub: Stub, steering: Steering, start_executor: Any
) -> None:
    """The dashboard pattern: subscribe, list RUNNING jobs, then apply changes. A job listed as
    RUNNING that never changed since must still be reported when it finishes."""
    await start_executor()
    job = await submit(jobs_stub)
    await wait_state(jobs_stub, job.id, S.JOB_STATE_RUNNING)
    call = await watch_jobs(jobs_stub, states=[S.JOB_STATE_RUNNING])
    try:
        steering.send(job.id, "finish")
        done = await next_job(call)
        assert (done.id, done.state) == (job.id, S.JOB_STATE_SUCCEEDED)
    finally:
        call.cancel()


async def test_progress_of_a_running_job_is_sent(
    jobs_stub: Stub, steering: Steering, start_executor: Any
) -> None:
    await start_executor()
    call = await watch_jobs(jobs_stub, type="steered")
    try:
        job = await submit(jobs_stub)

        async def next_of_job() -> job_pb2.Job:
            while True:
                item = await next_job(call)
                if item.id == job.id:
                    return item

        async def until(predicate: Any) -> job_pb2.Job:
            while not predicate(item := await next_of_job()):
                pass
            return item

        await until(lambda j: j.state == S.JOB_STATE_RUNNING)
        for percent in (25, 50, 75):
            steering.send(job.id, percent)
            item = await until(lambda j, p=percent: j.progress.percent == p)
            assert item.state == S.JOB_STATE_RUNNING
            assert item.progress.step == f"at {percent}"
            assert item.progress.HasField("update_time")
        steering.send(job.id, "finish")
        await until(lambda j: j.state == S.JOB_STATE_SUCCEEDED)
    finally:
        call.cancel()


# --- every transition -----------------------------------------------------------------------


def moves(item: job_service_pb2.WatchJobsResponse) -> list[tuple[int, int]]:
    return [(t.from_state, t.to_state) for t in item.transitions]


async def test_transitions_read_together_are_all_listed_with_the_latest_row(
    jobs_stub: Stub, scheduler: SchedulerServer, db: Database
) -> None:
    call = await watch_jobs(jobs_stub)
    try:
        job = await submit(jobs_stub, type="work")
        first = await next_item(call)
        assert first.job.state == S.JOB_STATE_QUEUED
        assert moves(first) == [(S.JOB_STATE_UNSPECIFIED, S.JOB_STATE_QUEUED)]

        # Claimed and succeeded before the stream looks again: one read sees both.
        now = utcnow()
        async with db.transaction() as conn:
            [claimed] = await claim_jobs(
                conn, executor="x", job_types=["work"], queues=[], limit=1,
                lease=timedelta(seconds=30), now=now,
            )  # fmt: skip
            await succeed_attempts(conn, [Success(job.id, claimed.attempt, b"", "test")], now)
        scheduler.hub.notify(job.id)

        item = await next_item(call)
        assert (item.job.id, item.job.state) == (job.id, S.JOB_STATE_SUCCEEDED)
        assert moves(item) == [
            (S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING),
            (S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED),
        ]
        assert [t.sequence for t in item.transitions] == [2, 3]
    finally:
        call.cancel()


async def test_every_transition_of_fast_jobs_reaches_the_subscriber(
    jobs_stub: Stub, start_executor: Any
) -> None:
    """The probe of the hardening issue: of 20 noop jobs, half arrived QUEUED then SUCCEEDED."""
    call = await watch_jobs(jobs_stub)
    try:
        await start_executor()
        ids = {(await submit(jobs_stub, type="noop")).id for _ in range(20)}
        seen: defaultdict[str, list[int]] = defaultdict(list)
        finished: set[str] = set()
        while finished != ids:
            item = await next_item(call)
            assert item.WhichOneof("item") == "job", item
            seen[item.job.id].extend(t.to_state for t in item.transitions)
            if item.job.state == S.JOB_STATE_SUCCEEDED:
                finished.add(item.job.id)
        for job_id in ids:
            assert seen[job_id] == [S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED]
    finally:
        call.cancel()


async def test_more_transitions_than_an_item_holds_are_announced_as_dropped(
    jobs_stub: Stub, scheduler: SchedulerServer, store: JobStore
) -> None:
    call = await watch_jobs(jobs_stub)
    try:
        job = await submit(jobs_stub, type="work")
        await next_item(call)
        # Cancel and retry it over and over without the stream being told.
        cycles = MAX_CHANGE_TRANSITIONS // 2 + 1
        for _ in range(cycles):
            now = utcnow()
            await store.cancel(Guard("default", job.id, JobState.QUEUED, 0), now, "t", "test")
            await store.retry(Guard("default", job.id, JobState.CANCELLED, 0), now, "t", "test")
        scheduler.hub.notify(job.id)

        dropped = await next_item(call)
        assert dropped.WhichOneof("item") == "changes_dropped"
        item = await next_item(call)
        assert item.job.id == job.id
        assert len(item.transitions) == MAX_CHANGE_TRANSITIONS
        # The latest ones, in order, ending with the retry back to QUEUED.
        sequences = [t.sequence for t in item.transitions]
        assert sequences == list(range(2 * cycles + 2 - MAX_CHANGE_TRANSITIONS, 2 * cycles + 2))
        assert item.transitions[-1].to_state == S.JOB_STATE_QUEUED
    finally:
        call.cancel()


# --- tenants, bad requests, falling behind, shutdown -----------------------------------------


async def test_jobs_of_other_tenants_are_never_sent(
    scheduler: SchedulerServer, jobs_stub: Stub
) -> None:
    async with JobschedClient(scheduler.address, tenant="acme") as client:
        stream = client.watch_jobs()
        first = await anext(stream)
        assert first.subscribed
        try:
            theirs = await submit(jobs_stub, tenant="default")
            await jobs_stub.CancelJob(
                job_service_pb2.CancelJobRequest(id=theirs.id), metadata=as_tenant("default")
            )
            await submit(jobs_stub, tenant="globex")
            ours = await submit(jobs_stub, tenant="acme")

            item = await asyncio.wait_for(anext(stream), ITEM_TIMEOUT)
            assert item.job.id == ours.id
        finally:
            await stream.aclose()


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"queue": "no spaces allowed"}, "queue"),
        ({"type": "x" * 65}, "type"),
        ({"states": [42]}, "states[0]"),
    ],
)
async def test_a_bad_filter_is_invalid_argument_naming_the_field(
    jobs_stub: Stub, request_fields: dict[str, Any], field: str
) -> None:
    call = jobs_stub.WatchJobs(job_service_pb2.WatchJobsRequest(**request_fields))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(call.read(), ITEM_TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(raised.value) == [field]


async def test_a_bad_tenant_is_invalid_argument(jobs_stub: Stub) -> None:
    call = jobs_stub.WatchJobs(job_service_pb2.WatchJobsRequest(), metadata=as_tenant("a b"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(call.read(), ITEM_TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(raised.value) == [TENANT_KEY]


async def test_a_subscriber_that_falls_behind_gets_changes_dropped_then_recovers(
    scheduler: SchedulerServer, jobs_stub: Stub
) -> None:
    scheduler.hub.change_limit = 5
    call = await watch_jobs(jobs_stub)
    try:
        # One batch notifies 20 jobs at once, before the stream can take any: the 6th overflows.
        await jobs_stub.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(jobs=[job_pb2.JobSpec(type="noop")] * 20)
        )
        dropped = await next_item(call)
        assert dropped.WhichOneof("item") == "changes_dropped"
        assert dropped.changes_dropped

        after = await submit(jobs_stub, type="noop")
        assert (await next_job(call)).id == after.id
    finally:
        call.cancel()


async def test_a_subscriber_leaving_with_changes_in_flight_is_unsubscribed(
    scheduler: SchedulerServer, jobs_stub: Stub
) -> None:
    """Cancelling a stream whose items are still on their way used to crash the whole process
    (grpcio segfaults in context.peer() afterwards; the access log no longer asks then)."""
    call = await watch_jobs(jobs_stub)
    await jobs_stub.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(jobs=[job_pb2.JobSpec(type="noop")] * 50)
    )
    await next_item(call)
    call.cancel()

    async def unsubscribed() -> None:
        assert scheduler.hub.subscription_count() == 0

    await assert_eventually(unsubscribed)
    assert (await submit(jobs_stub, type="noop")).state == S.JOB_STATE_QUEUED


async def test_watch_jobs_streams_end_unavailable_when_the_scheduler_stops(db: Database) -> None:
    server = SchedulerServer(db, ServerSettings(listen="127.0.0.1:0", shutdown_grace=10.0))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = await watch_jobs(job_service_pb2_grpc.JobServiceStub(channel))
            loop = asyncio.get_running_loop()
            began = loop.time()
            await server.stop()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await next_item(call)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert loop.time() - began < 5.0  # ended at once, not after the 10 s grace
    finally:
        await server.stop(grace=0)


# --- CLI --------------------------------------------------------------------------------------


async def test_cli_ls_watch_prints_one_line_per_change(
    scheduler: SchedulerServer, jobs_stub: Stub
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("jobsched")),
        "--address", scheduler.address, "ls", "--watch", "--queue", "cli",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        notice = await asyncio.wait_for(process.stderr.readline(), 30)
        assert b"watching" in notice
        await submit(jobs_stub, queue="other")
        job = await submit(jobs_stub, queue="cli", type="noop")
        await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=job.id))

        lines = [(await asyncio.wait_for(process.stdout.readline(), ITEM_TIMEOUT)).decode()]
        if "cancelled" not in lines[0]:
            lines.append((await asyncio.wait_for(process.stdout.readline(), ITEM_TIMEOUT)).decode())
        assert all(job.id in line and " cli " in f" {line} " for line in lines), lines
        assert "cancelled" in lines[-1]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            rest, _ = await process.communicate()
    assert process.returncode == 0, rest
