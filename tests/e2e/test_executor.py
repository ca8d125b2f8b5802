"""The executor package against a real scheduler over gRPC: jobs run, succeed exactly once,
report progress, and honour cancellation."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from sqlalchemy import text

from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.helpers import assert_eventually

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub


async def submit_sleep(stub: Stub, seconds: int) -> str:
    response = await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(
            job=job_pb2.JobSpec(type="sleep", payload=json.dumps({"seconds": seconds}).encode())
        )
    )
    return str(response.job.id)


async def wait_for_state(
    stub: Stub, job_id: str, state: job_pb2.JobState.ValueType, within: float = 10
) -> None:
    async def reached() -> None:
        job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert job.state == state

    await assert_eventually(reached, within=within)


@pytest.fixture
async def two_executors(scheduler: SchedulerServer) -> AsyncIterator[list[Executor]]:
    executors = [
        Executor([scheduler.address], name=f"exec-{i}", capacity=4, registry=builtin_registry())
        for i in range(2)
    ]
    for executor in executors:
        await executor.start()
        await executor.wait_registered()
    yield executors
    for executor in executors:
        await executor.stop(grace=1.0)


async def test_jobs_run_on_two_executors_and_each_succeeds_once(
    two_executors: list[Executor], channel: grpc.aio.Channel, db: Database
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    response = await stub.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(jobs=[job_pb2.JobSpec(type="noop") for _ in range(60)])
    )
    ids = {j.id for j in response.jobs}

    async def all_succeeded() -> None:
        async with db.read() as conn:
            done = await conn.scalar(text("SELECT count(*) FROM jobs WHERE state = 'succeeded'"))
        assert done == len(ids)

    await assert_eventually(all_succeeded, within=20)
    async with db.read() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT executor, count(*) FROM job_events WHERE to_state = 'running' "
                    "GROUP BY executor"
                )
            )
        ).all()
        runs = await conn.scalar(
            text("SELECT count(*) FROM job_events WHERE to_state = 'succeeded'")
        )
    assert runs == len(ids)  # one recorded outcome per job
    assert sum(r[1] for r in rows) == len(ids)  # one run per job
    assert {r[0] for r in rows} == {"exec-0", "exec-1"}  # both executors worked


async def test_a_running_sleep_job_is_cancelled_through_its_executor(
    two_executors: list[Executor], channel: grpc.aio.Channel
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    job_id = await submit_sleep(stub, 30)

    await wait_for_state(stub, job_id, job_pb2.JOB_STATE_RUNNING)
    await stub.CancelJob(job_service_pb2.CancelJobRequest(id=job_id))

    await wait_for_state(stub, job_id, job_pb2.JOB_STATE_CANCELLED)


async def test_progress_of_a_running_job_is_visible_to_clients(
    two_executors: list[Executor], channel: grpc.aio.Channel
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    job_id = await submit_sleep(stub, 3)

    async def reporting() -> None:
        job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert job.state == job_pb2.JOB_STATE_RUNNING
        assert 0 < job.progress.percent < 100
        assert job.progress.step == "sleeping"
        assert job.progress.HasField("update_time")

    await assert_eventually(reporting, within=10)

    async def finished() -> None:
        job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED
        assert job.progress.percent == 100

    await assert_eventually(finished, within=15)


async def watch(stub: Stub, job_id: str, after: int = 0) -> list[job_service_pb2.WatchJobResponse]:
    """Every item of a WatchJob stream, which must end by itself after the terminal event."""
    items = []
    async with asyncio.timeout(20):
        async for item in stub.WatchJob(
            job_service_pb2.WatchJobRequest(id=job_id, after_sequence=after)
        ):
            items.append(item)
    return items


async def test_watch_streams_snapshot_transitions_and_progress_then_ends(
    two_executors: list[Executor], channel: grpc.aio.Channel
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    job_id = await submit_sleep(stub, 2)
    items = await watch(stub, job_id)

    assert items[0].WhichOneof("item") == "snapshot"
    events = [i.event for i in items if i.WhichOneof("item") == "event"]
    states = [e.to_state for e in events]
    assert states[-1] == job_pb2.JOB_STATE_SUCCEEDED
    assert job_pb2.JOB_STATE_RUNNING in states or items[0].snapshot.state == (
        job_pb2.JOB_STATE_RUNNING
    )
    # Sequence numbers continue the snapshot's without gaps.
    seqs = [items[0].sequence] + [e.sequence for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    percents = [i.progress.percent for i in items if i.WhichOneof("item") == "progress"]
    assert percents, "no live progress reached the watcher"
    assert percents == sorted(percents)
    # As the sleep handler reports them: from 0 % (its first report) upwards.
    assert all(0 <= p <= 100 for p in percents)
    assert len(set(percents)) >= 2, "progress reached the watcher only once"


async def test_a_watch_resumed_after_a_sequence_number_misses_no_transition(
    two_executors: list[Executor], channel: grpc.aio.Channel
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    submitted = await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="noop"))
    )
    job_id = submitted.job.id
    first = await watch(stub, job_id)
    history = (
        await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id, include_events=True))
    ).events
    assert history[-1].to_state == job_pb2.JOB_STATE_SUCCEEDED
    assert first[-1].sequence == history[-1].sequence

    # Resuming after the creation event replays every later transition, without a snapshot.
    resumed = await watch(stub, job_id, after=1)
    assert [i.WhichOneof("item") for i in resumed] == ["event"] * (len(history) - 1)
    assert [i.event for i in resumed] == list(history[1:])
    # Resuming after the last event ends at once: nothing was missed.
    assert await watch(stub, job_id, after=history[-1].sequence) == []


async def test_a_watcher_that_never_reads_does_not_hold_up_others(
    two_executors: list[Executor], channel: grpc.aio.Channel
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    job_id = await submit_sleep(stub, 1)
    idle = stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id))
    try:
        items = await watch(stub, job_id)
        assert items[-1].event.to_state == job_pb2.JOB_STATE_SUCCEEDED
    finally:
        idle.cancel()


async def jobsched_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("jobsched")),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def test_cli_submit_watch_follows_the_job_to_success(
    two_executors: list[Executor], scheduler: SchedulerServer
) -> None:
    process = await jobsched_cli(
        "--address", scheduler.address, "submit", "--type", "sleep",
        "--payload", '{"seconds": 1}', "--watch",
    )  # fmt: skip
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    text_output = output.decode()
    assert process.returncode == 0, text_output
    assert "succeeded" in text_output


async def test_cli_watch_exits_non_zero_when_the_job_is_cancelled(
    two_executors: list[Executor], scheduler: SchedulerServer, channel: grpc.aio.Channel
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    job_id = await submit_sleep(stub, 30)
    process = await jobsched_cli("--address", scheduler.address, "watch", job_id)

    async def running() -> None:
        job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert job.state == job_pb2.JOB_STATE_RUNNING

    await assert_eventually(running, within=10)
    await stub.CancelJob(job_service_pb2.CancelJobRequest(id=job_id))
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode == 6, output.decode()
    assert "cancelled" in output.decode()


async def test_an_executor_killed_mid_job_has_its_job_finished_by_another(
    scheduler: SchedulerServer, channel: grpc.aio.Channel
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    doomed = await jobsched_cli(
        "executor", "--scheduler", scheduler.address, "--name", "doomed", "--capacity", "1"
    )
    survivor: Executor | None = None
    try:
        job_id = await submit_sleep(stub, 2)

        async def running_on_doomed() -> None:
            job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
            assert job.state == job_pb2.JOB_STATE_RUNNING
            assert job.executor == "doomed"

        await assert_eventually(running_on_doomed, within=20)
        doomed.kill()  # SIGKILL: no goodbye, the stream just breaks
        await doomed.wait()

        survivor = Executor(
            [scheduler.address], name="survivor", capacity=1, registry=builtin_registry()
        )
        await survivor.start()
        await wait_for_state(stub, job_id, job_pb2.JOB_STATE_SUCCEEDED, within=30)
        response = await stub.GetJobStatus(
            job_service_pb2.GetJobStatusRequest(id=job_id, include_events=True)
        )
        assert response.job.executor == "survivor"
        assert response.job.attempt == 2  # the killed attempt counted
        assert [e.executor for e in response.events if e.to_state == job_pb2.JOB_STATE_RUNNING] == [
            "doomed",
            "survivor",
        ]
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
        if survivor is not None:
            await survivor.stop(grace=1.0)


async def test_an_executor_logs_each_job_at_debug_and_what_went_wrong_at_info(
    scheduler: SchedulerServer, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobsched.executor")

    async def fails(ctx: JobContext) -> None:
        raise RuntimeError("boom")

    registry = builtin_registry(extra=[("fails", fails)])
    executor = Executor([scheduler.address], name="logging", capacity=2, registry=registry)
    await executor.start()
    try:
        await executor.wait_registered()
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        ids = {}
        for job_type in ("noop", "fails"):
            request = job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type=job_type))
            ids[job_type] = (await stub.SubmitJob(request)).job.id

        def levels() -> dict[tuple[str, str], int]:
            found = {}
            for record in caplog.records:
                fields = getattr(record, "fields", None)
                if isinstance(fields, dict) and "job_id" in fields:
                    found[(fields["job_id"], fields["event"])] = record.levelno
            return found

        async def both_finished() -> None:
            seen = levels()
            assert (ids["noop"], "executor.job_finished") in seen
            assert (ids["fails"], "executor.job_finished") in seen

        await assert_eventually(both_finished)
        seen = levels()
        assert seen[(ids["noop"], "executor.job_started")] == logging.DEBUG
        assert seen[(ids["noop"], "executor.job_finished")] == logging.DEBUG
        assert seen[(ids["fails"], "executor.job_finished")] == logging.INFO
    finally:
        await executor.stop()


async def test_a_result_over_one_mebibyte_fails_the_job_without_retry(
    scheduler: SchedulerServer, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobsched.executor")

    async def large(ctx: JobContext) -> bytes:
        return b"x" * (2 * 1024 * 1024)

    registry = builtin_registry(extra=[("large", large)])
    executor = Executor([scheduler.address], name="large", capacity=1, registry=registry)
    await executor.start()
    try:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        request = job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="large"))
        job_id = (await stub.SubmitJob(request)).job.id
        await wait_for_state(stub, job_id, job_pb2.JOB_STATE_DEAD)
        job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert job.attempt == 1  # not retried: a retry would return as much
        assert job.last_error == (
            "result is 2097152 bytes; at most 1048576 are allowed "
            "(store larger output as an artifact and return a reference)"
        )
        assert job.result == b""
        # The executor failed the attempt itself: it never sent the 2 MiB.
        finished = [
            r.fields  # type: ignore[attr-defined]
            for r in caplog.records
            if getattr(r, "fields", {}).get("event") == "executor.job_finished"
        ]
        assert [(f["job_id"], f["outcome"], f.get("retryable")) for f in finished] == [
            (job_id, "failure", False)
        ]
    finally:
        await executor.stop(grace=1.0)


async def test_a_handler_knows_whose_job_it_runs(scheduler: SchedulerServer) -> None:
    """ctx.tenant is the submitter's tenant (Assignment.tenant), for handlers acting for it."""

    async def whose(ctx: JobContext) -> dict[str, str]:
        return {"tenant": ctx.tenant}

    registry = builtin_registry(extra=[("whose", whose)])
    executor = Executor([scheduler.address], name="tenants", capacity=2, registry=registry)
    await executor.start()
    try:
        for tenant in ("acme", None):
            async with JobschedClient(scheduler.address, tenant=tenant, timeout=10) as client:
                job = await client.submit("whose")

                async def succeeded(job_id: str = job.id) -> job_pb2.Job:
                    done = await client.get(job_id)
                    assert done.state == job_pb2.JOB_STATE_SUCCEEDED
                    return done

                done = await assert_eventually(succeeded, within=15)
                assert json.loads(done.result) == {"tenant": tenant or "default"}
    finally:
        await executor.stop(1.0)
