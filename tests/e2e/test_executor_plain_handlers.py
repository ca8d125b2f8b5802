"""Handlers may be plain functions (run in the executor's thread pool, with the same JobContext),
and whatever a handler does fails that attempt, never the executor's stream: a broken handler's
job ends DEAD (or is retried) while the executor stays registered on the same session."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from executor.handlers import Handler, JobContext, builtin_registry
from executor.runner import Executor
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.helpers import assert_eventually

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub


async def submit(stub: Stub, job_type: str, **fields: Any) -> str:
    response = await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type=job_type, **fields))
    )
    return str(response.job.id)


async def finished(stub: Stub, job_id: str, within: float = 15) -> job_pb2.Job:
    terminal = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_DEAD, job_pb2.JOB_STATE_CANCELLED}

    async def ended() -> job_pb2.Job:
        job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert job.state in terminal, job_pb2.JobState.Name(job.state)
        return job

    return await assert_eventually(ended, within=within)


@pytest.fixture
async def start_executor(scheduler: SchedulerServer) -> AsyncIterator[Any]:
    started: list[Executor] = []

    async def start(handlers: dict[str, Handler], capacity: int = 2) -> Executor:
        executor = Executor(
            [scheduler.address],
            name=f"plain-{len(started)}",
            capacity=capacity,
            registry=builtin_registry(extra=handlers.items()),
        )
        started.append(executor)
        await executor.start()
        await executor.wait_registered()
        return executor

    yield start
    for executor in started:
        await executor.stop(grace=1.0)


async def test_a_plain_function_runs_in_a_worker_thread_with_progress_and_logs(
    start_executor: Any, channel: grpc.aio.Channel
) -> None:
    release = threading.Event()

    def plain(ctx: JobContext) -> dict[str, Any]:
        ctx.log("first line")
        ctx.progress(40, step="halfway", message="from a thread")
        # Waits (blocking, as plain functions do) until the test has seen the progress.
        assert release.wait(timeout=10)
        ctx.log("second line")
        return {"payload": ctx.json(), "thread": threading.current_thread().name}

    await start_executor({"plain": plain})
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    job_id = await submit(stub, "plain", payload=json.dumps({"n": 7}).encode())

    async def reporting() -> None:
        job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert job.state == job_pb2.JOB_STATE_RUNNING
        assert (job.progress.percent, job.progress.step) == (40, "halfway")
        assert job.progress.message == "from a thread"

    await assert_eventually(reporting, within=10)
    release.set()
    job = await finished(stub, job_id)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert job.attempt == 1
    result = json.loads(job.result)
    assert result["payload"] == {"n": 7}
    assert result["thread"] != threading.current_thread().name  # not on the event loop's thread
    logs = await stub.ListJobLogs(job_service_pb2.ListJobLogsRequest(id=job_id))
    assert [(line.line_number, line.line) for line in logs.lines] == [
        (1, "first line"),
        (2, "second line"),
    ]


class Unencodable:
    pass


async def later(ctx: JobContext) -> str:
    return "never awaited by the executor"


def returns_an_object(ctx: JobContext) -> Any:
    return Unencodable()


def raises(ctx: JobContext) -> None:
    raise RuntimeError("plain boom")


def returns_a_coroutine(ctx: JobContext) -> Any:
    return later(ctx)  # a plain function that forgot to be async


async def exits(ctx: JobContext) -> None:
    raise SystemExit(3)


async def returns_a_circle(ctx: JobContext) -> dict[str, Any]:
    circle: dict[str, Any] = {}
    circle["self"] = circle
    return circle


BROKEN: dict[str, tuple[Handler, str]] = {
    "object": (returns_an_object, "Unencodable is not bytes, str, a dict, a list or None"),
    "raises": (raises, "RuntimeError: plain boom"),
    "coroutine": (returns_a_coroutine, "async def"),
    "exits": (exits, "SystemExit"),
    "circle": (returns_a_circle, "Circular reference"),
}


async def test_broken_handlers_fail_their_attempts_and_never_the_stream(
    start_executor: Any, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched.executor")
    executor = await start_executor({name: handler for name, (handler, _) in BROKEN.items()})
    session = executor.session_id
    assert session
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    ids = {name: await submit(stub, name, max_attempts=1) for name in BROKEN}

    jobs = {name: await finished(stub, job_id) for name, job_id in ids.items()}
    for name, job in jobs.items():
        assert job.state == job_pb2.JOB_STATE_DEAD, name
        assert job.attempt == 1, name  # one attempt each: never handed out again
        assert BROKEN[name][1] in job.last_error, (name, job.last_error)

    # The stream never failed or reconnected: same session, and it still runs work.
    assert executor.session_id == session
    assert executor.registered
    events = [getattr(r, "fields", {}).get("event") for r in caplog.records]
    assert "executor.stream_failed" not in events
    assert events.count("executor.registered") == 1
    job = await finished(stub, await submit(stub, "noop"))
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert executor.session_id == session


async def test_a_broken_handler_with_attempts_left_is_retried_not_dead(
    start_executor: Any, channel: grpc.aio.Channel
) -> None:
    executor = await start_executor({"raises": raises})
    session = executor.session_id
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    job_id = await submit(stub, "raises", max_attempts=3)

    async def retried() -> None:
        job = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert job.state == job_pb2.JOB_STATE_SCHEDULED
        # The exception first, then its traceback (an unexpected error: where it was raised).
        first, _, traceback = job.last_error.partition("\n\n")
        assert first == "RuntimeError: plain boom"
        assert traceback.startswith("Traceback (most recent call last):")
        assert ", in raises\n" in traceback

    await assert_eventually(retried, within=10)
    assert executor.session_id == session
