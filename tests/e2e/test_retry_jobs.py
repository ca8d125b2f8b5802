"""RetryJobs (bulk retry of the dead-letter queue) end to end: a SchedulerServer on 127.0.0.1:0,
real gRPC and a fresh PostgreSQL database per test; the CLI runs as its console script.

Jobs are submitted through the API with max_attempts=1. They become DEAD the way the dispatcher
makes them so, through the store's claim and outcome statements (a non-retryable failure, at a
finish time the test chooses), or by a real executor whose handler raises NonRetryableError.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from executor.handlers import JobContext, NonRetryableError, builtin_registry
from executor.runner import Executor
from jobsched import cli
from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.domain.retry import FailureOutcome
from scheduler.domain.states import Event, JobState
from scheduler.server import SchedulerServer
from scheduler.store.attempts import claim_jobs, fail_attempt
from scheduler.store.database import Database
from scheduler.store.jobs import Guard
from tests.helpers import assert_eventually

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub

S = job_pb2.JobState
Code = grpc.StatusCode
TENANT_KEY = "x-jobsched-tenant"
REASON = "retried by client (bulk)"
# Finish times of the DEAD jobs made here: BASE + the offsets a test picks.
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
CLI_TIMEOUT = 30.0


def as_tenant(tenant: str) -> tuple[tuple[str, str], ...]:
    return ((TENANT_KEY, tenant),)


def ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


async def submit(
    stub: Stub, n: int, *, tenant: str = "default", queue: str = "q", job_type: str = "work"
) -> list[job_pb2.Job]:
    specs = [job_pb2.JobSpec(queue=queue, type=job_type, max_attempts=1) for _ in range(n)]
    response = await stub.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(jobs=specs), metadata=as_tenant(tenant)
    )
    return list(response.jobs)


async def make_dead(
    stub: Stub,
    db: Database,
    n: int,
    *,
    offsets: Sequence[float] | None = None,
    **spec: Any,
) -> list[job_pb2.Job]:
    """Submit n jobs and fail each one's only attempt non-retryably: DEAD, finished at BASE +
    offsets[i] seconds (default i). No other QUEUED job of that queue and type may exist."""
    jobs = await submit(stub, n, **spec)
    finish = [BASE + timedelta(seconds=s) for s in (offsets or range(n))]
    async with db.transaction() as conn:
        claimed = await claim_jobs(
            conn,
            executor="ex-test",
            job_types=[jobs[0].type],
            queues=[jobs[0].queue],
            limit=n,
            lease=timedelta(seconds=30),
            now=datetime.now(UTC),
        )
        assert {j.id for j in claimed} == {j.id for j in jobs}
        by_id = {j.id: j for j in claimed}
        for job, finished_at in zip(jobs, finish, strict=True):
            running = by_id[job.id]
            await fail_attempt(
                conn,
                Guard(running.tenant, running.id, running.state, running.attempt),
                FailureOutcome(Event.FAIL_FINAL, JobState.DEAD, None),
                "boom",
                finished_at,
                "executor:ex-test",
            )
    return [await get(stub, j.id, tenant=spec.get("tenant", "default")) for j in jobs]


async def cancelled(stub: Stub, n: int, **spec: Any) -> list[job_pb2.Job]:
    out = []
    for job in await submit(stub, n, **spec):
        response = await stub.CancelJob(
            job_service_pb2.CancelJobRequest(id=job.id),
            metadata=as_tenant(spec.get("tenant", "default")),
        )
        out.append(response.job)
    return out


async def get(stub: Stub, job_id: str, tenant: str = "default") -> job_pb2.Job:
    response = await stub.GetJobStatus(
        job_service_pb2.GetJobStatusRequest(id=job_id), metadata=as_tenant(tenant)
    )
    return response.job


async def states(stub: Stub, jobs: Sequence[job_pb2.Job], tenant: str = "default") -> list[int]:
    return [(await get(stub, j.id, tenant)).state for j in jobs]


async def retry_jobs(
    stub: Stub, tenant: str = "default", **request: Any
) -> job_service_pb2.RetryJobsResponse:
    return await stub.RetryJobs(
        job_service_pb2.RetryJobsRequest(**request), metadata=as_tenant(tenant)
    )


async def invalid_fields(call: Any) -> list[str]:
    """Await an RPC that must be INVALID_ARGUMENT; return the fields its BadRequest names."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == Code.INVALID_ARGUMENT, raised.value.details()
    status = rpc_status.from_call(raised.value)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


async def row_counts(db: Database) -> tuple[int, int, int]:
    """(jobs, job_events, DEAD or CANCELLED jobs) in the whole database."""
    async with db.read() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_events), "
                    "(SELECT count(*) FROM jobs WHERE state IN ('dead', 'cancelled'))"
                )
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


# --- the RPC ----------------------------------------------------------------------------------


async def test_the_dead_letter_queue_is_retried_by_default(jobs_stub: Stub, db: Database) -> None:
    dead = await make_dead(jobs_stub, db, 3)
    cancelled_job = (await cancelled(jobs_stub, 1))[0]
    [queued] = await submit(jobs_stub, 1, job_type="other")

    response = await retry_jobs(jobs_stub)
    assert (response.retried_count, response.more) == (3, False)

    for before in dead:
        response_job = await get(jobs_stub, before.id)
        assert response_job.state == S.JOB_STATE_QUEUED
        assert not response_job.HasField("finish_time")
        assert response_job.attempt == 1
        assert response_job.max_attempts == 2  # a new attempt is allowed
        events = (
            await jobs_stub.GetJobStatus(
                job_service_pb2.GetJobStatusRequest(id=before.id, include_events=True)
            )
        ).events
        last = events[-1]
        assert (last.sequence, last.from_state, last.to_state) == (
            len(events),
            S.JOB_STATE_DEAD,
            S.JOB_STATE_QUEUED,
        )
        assert (last.reason, last.actor, last.attempt) == (REASON, "client", 1)
    # DEAD only: the cancelled and the active job are left alone.
    assert await states(jobs_stub, [cancelled_job, queued]) == [
        S.JOB_STATE_CANCELLED,
        S.JOB_STATE_QUEUED,
    ]
    history = await jobs_stub.GetJobHistory(
        job_service_pb2.GetJobHistoryRequest(states=[S.JOB_STATE_DEAD])
    )
    assert list(history.jobs) == []
    assert (await retry_jobs(jobs_stub)).retried_count == 0


async def test_filters_queue_type_states_and_finish_time(jobs_stub: Stub, db: Database) -> None:
    q1 = await make_dead(jobs_stub, db, 3, queue="q1", offsets=[0, 10, 20])
    q2 = await make_dead(jobs_stub, db, 1, queue="q2", offsets=[5])
    other_type = await make_dead(jobs_stub, db, 1, queue="q1", job_type="other", offsets=[5])
    cancelled_jobs = await cancelled(jobs_stub, 2, queue="q1")

    # Names are case-insensitive, like the lists'.
    by_type = await retry_jobs(jobs_stub, queue="Q1", type="OTHER")
    assert by_type.retried_count == 1
    assert await states(jobs_stub, other_type) == [S.JOB_STATE_QUEUED]

    # finish_time_after is inclusive, finish_time_before exclusive.
    window = await retry_jobs(
        jobs_stub,
        queue="q1",
        finish_time_after=ts(BASE + timedelta(seconds=10)),
        finish_time_before=ts(BASE + timedelta(seconds=20)),
    )
    assert window.retried_count == 1
    assert await states(jobs_stub, q1) == [S.JOB_STATE_DEAD, S.JOB_STATE_QUEUED, S.JOB_STATE_DEAD]

    only_cancelled = await retry_jobs(jobs_stub, states=[S.JOB_STATE_CANCELLED])
    assert only_cancelled.retried_count == 2
    assert await states(jobs_stub, cancelled_jobs) == [S.JOB_STATE_QUEUED] * 2
    assert await states(jobs_stub, [*q1, *q2]) == [
        S.JOB_STATE_DEAD,
        S.JOB_STATE_QUEUED,
        S.JOB_STATE_DEAD,
        S.JOB_STATE_DEAD,
    ]

    # Both states at once; no states means DEAD (JOB_STATE_UNSPECIFIED is refused:
    # tests/e2e/test_bad_input.py).
    await cancelled(jobs_stub, 1, queue="q2")
    both = await retry_jobs(jobs_stub, queue="q2", states=[S.JOB_STATE_CANCELLED, S.JOB_STATE_DEAD])
    assert both.retried_count == 2
    rest = await retry_jobs(jobs_stub)
    assert (rest.retried_count, rest.more) == (2, False)
    assert await states(jobs_stub, q1) == [S.JOB_STATE_QUEUED] * 3


async def test_limit_takes_the_oldest_finished_first_and_more_says_when_to_call_again(
    jobs_stub: Stub, db: Database
) -> None:
    offsets = [4, 0, 3, 1, 2]
    dead = await make_dead(jobs_stub, db, 5, offsets=offsets)
    oldest_first = [j for _, j in sorted(zip(offsets, dead, strict=True), key=lambda p: p[0])]

    first = await retry_jobs(jobs_stub, limit=2)
    assert (first.retried_count, first.more) == (2, True)
    assert (
        await states(jobs_stub, oldest_first) == [S.JOB_STATE_QUEUED] * 2 + [S.JOB_STATE_DEAD] * 3
    )
    second = await retry_jobs(jobs_stub, limit=2)
    assert (second.retried_count, second.more) == (2, True)
    last = await retry_jobs(jobs_stub, limit=2)
    assert (last.retried_count, last.more) == (1, False)
    assert await states(jobs_stub, dead) == [S.JOB_STATE_QUEUED] * 5
    # A limit above the maximum is coerced, not refused.
    assert (await retry_jobs(jobs_stub, limit=1_000_000)).retried_count == 0


async def test_other_tenants_are_untouched(jobs_stub: Stub, db: Database) -> None:
    acme = await make_dead(jobs_stub, db, 2, tenant="acme")
    default = await make_dead(jobs_stub, db, 2)

    assert (await retry_jobs(jobs_stub, tenant="acme")).retried_count == 2
    assert await states(jobs_stub, acme, tenant="acme") == [S.JOB_STATE_QUEUED] * 2
    assert await states(jobs_stub, default) == [S.JOB_STATE_DEAD] * 2
    assert (await retry_jobs(jobs_stub, tenant="globex")).retried_count == 0
    assert (await retry_jobs(jobs_stub)).retried_count == 2


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"states": [S.JOB_STATE_RUNNING]}, "states"),
        ({"states": [S.JOB_STATE_DEAD, S.JOB_STATE_SUCCEEDED]}, "states"),
        ({"states": [S.JOB_STATE_QUEUED]}, "states"),
        ({"states": [99]}, "states[0]"),
        ({"limit": -1}, "limit"),
        ({"queue": "Bad Queue!"}, "queue"),
        ({"type": "no spaces"}, "type"),
        (
            {
                "finish_time_after": ts(BASE + timedelta(seconds=5)),
                "finish_time_before": ts(BASE + timedelta(seconds=5)),
            },
            "finish_time_after",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_and_changes_nothing(
    jobs_stub: Stub, db: Database, request_fields: dict[str, Any], field: str
) -> None:
    await make_dead(jobs_stub, db, 2)
    await cancelled(jobs_stub, 1)
    before = await row_counts(db)
    assert await invalid_fields(retry_jobs(jobs_stub, **request_fields)) == [field]
    assert await row_counts(db) == before


async def test_watchers_see_the_retried_jobs(jobs_stub: Stub, db: Database) -> None:
    dead = await make_dead(jobs_stub, db, 3)
    call = jobs_stub.WatchJobs(job_service_pb2.WatchJobsRequest(states=[S.JOB_STATE_QUEUED]))
    try:
        first = await asyncio.wait_for(call.read(), 10)
        assert isinstance(first, job_service_pb2.WatchJobsResponse)
        assert first.subscribed
        assert (await retry_jobs(jobs_stub)).retried_count == 3
        seen: set[str] = set()
        while len(seen) < 3:
            item = await asyncio.wait_for(call.read(), 10)
            assert isinstance(item, job_service_pb2.WatchJobsResponse)
            assert item.job.state == S.JOB_STATE_QUEUED
            seen.add(item.job.id)
        assert seen == {j.id for j in dead}
    finally:
        call.cancel()


async def test_a_retried_job_runs_again_on_an_executor(
    scheduler: SchedulerServer, jobs_stub: Stub
) -> None:
    """The whole loop: a handler fails non-retryably (DEAD), RetryJobs wakes the dispatcher and
    the new attempt succeeds."""
    attempts: list[int] = []

    async def fails_once(ctx: JobContext) -> bytes:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise NonRetryableError("first attempt fails for good")
        return b"ok"

    executor = Executor(
        [scheduler.address],
        name="retry-exec",
        capacity=4,
        registry=builtin_registry([("flaky", fails_once)]),
    )
    await executor.start()
    try:
        await executor.wait_registered()
        jobs = await submit(jobs_stub, 2, job_type="flaky")

        async def dead() -> None:
            assert await states(jobs_stub, jobs) == [S.JOB_STATE_DEAD] * 2

        await assert_eventually(dead, within=10)
        assert (await retry_jobs(jobs_stub, type="flaky")).retried_count == 2

        async def succeeded() -> None:
            assert await states(jobs_stub, jobs) == [S.JOB_STATE_SUCCEEDED] * 2

        await assert_eventually(succeeded, within=10)
        assert sorted(attempts) == [1, 1, 2, 2]
        for job in jobs:
            done = await get(jobs_stub, job.id)
            assert (done.attempt, done.max_attempts) == (2, 2)
    finally:
        await executor.stop(grace=1.0)


# --- the client and the CLI -------------------------------------------------------------------


async def test_client_retry_many_and_retry_all(
    scheduler: SchedulerServer, jobs_stub: Stub, db: Database
) -> None:
    async with JobschedClient(scheduler.address, tenant="acme", timeout=10) as client:
        dead = await make_dead(jobs_stub, db, 5, tenant="acme", offsets=[0, 1, 2, 3, 4])
        await cancelled(jobs_stub, 2, tenant="acme")

        assert await client.retry_many(limit=2, finished_before=BASE + timedelta(seconds=3)) == (
            2,
            True,
        )
        assert await client.retry_many(queue="Q", type="Work", states=["dead"], limit=10) == (
            3,
            False,
        )
        assert await states(jobs_stub, dead, tenant="acme") == [S.JOB_STATE_QUEUED] * 5
        assert await client.retry_all(states=["cancelled", "dead"], limit=1) == 2
        assert await client.retry_all() == 0


def _jobsched_command() -> list[str]:
    script = Path(sys.executable).with_name("jobsched")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from jobsched.cli import main; sys.exit(main())"]


async def jobsched(address: str, *args: str) -> tuple[int, str, str]:
    """Run the CLI as a user would, while this event loop keeps serving the scheduler."""
    proc = await asyncio.create_subprocess_exec(
        *_jobsched_command(),
        "--address",
        address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def test_cli_bulk_retry(scheduler: SchedulerServer, jobs_stub: Stub, db: Database) -> None:
    address = scheduler.address
    mail = await make_dead(jobs_stub, db, 3, queue="mail")
    reports = await make_dead(jobs_stub, db, 2, queue="reports")
    cancelled_jobs = await cancelled(jobs_stub, 2, queue="mail")
    acme = await make_dead(jobs_stub, db, 1, queue="mail", tenant="acme")

    code, out, err = await jobsched(address, "retry", "--dead", "--queue", "MAIL", "--limit", "2")
    assert code == 0, err
    assert out == "retried 2 jobs\n"
    assert "more jobs match" in err
    code, out, err = await jobsched(address, "retry", "--dead", "--queue", "mail", "--json")
    assert code == 0, err
    assert json.loads(out) == {"retried": 1, "more": False}
    assert await states(jobs_stub, mail) == [S.JOB_STATE_QUEUED] * 3
    assert await states(jobs_stub, reports) == [S.JOB_STATE_DEAD] * 2

    code, out, err = await jobsched(address, "retry", "--cancelled", "--dead")
    assert code == 0, err
    assert out == "retried 4 jobs\n"
    assert await states(jobs_stub, [*reports, *cancelled_jobs]) == [S.JOB_STATE_QUEUED] * 4
    assert await states(jobs_stub, acme, tenant="acme") == [S.JOB_STATE_DEAD]
    code, out, err = await jobsched(
        address, "--tenant", "acme", "retry", "--dead", "--type", "work"
    )
    assert (code, out) == (0, "retried 1 job\n"), err

    # Bad input from the server is exit code 2 too, naming the field.
    code, out, err = await jobsched(address, "retry", "--dead", "--queue", "Bad Queue!")
    assert code == 2
    assert "queue" in err


def test_cli_retry_takes_an_id_or_the_bulk_options(capsys: pytest.CaptureFixture[str]) -> None:
    job_id = "0b6a1e5e-4a52-4a8e-9a57-2f1c1f8f4c11"
    for argv in (
        ["retry"],  # neither
        ["retry", "--queue", "q"],  # a filter without --dead or --cancelled
        ["retry", job_id, "--dead"],  # both
        ["retry", job_id, "--queue", "q"],
        ["retry", job_id, "--limit", "5"],
        ["retry", "--dead", "--limit", "-1"],
    ):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "usage: jobsched retry" in err, argv
    assert cli.main(["retry", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--dead", "--cancelled", "--queue", "--type", "--limit", "--json"):
        assert option in out
