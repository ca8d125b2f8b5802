"""JobService end to end: a SchedulerServer on 127.0.0.1:0, real gRPC (grpc.aio) and a fresh,
fully migrated PostgreSQL database per test. No mocks: jobs are set up through the API, and only
states the API cannot reach yet (RUNNING, SUCCEEDED, DEAD: they need executors) are written with
raw SQL, the way an executor's transition would leave the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy import text
from sqlalchemy.engine import make_url

from jobsched.logs import JsonFormatter
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.helpers import assert_eventually

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub
Code = grpc.StatusCode
S = job_pb2.JobState

TENANT_KEY = "x-jobsched-tenant"
ERROR_DOMAIN = "jobsched.dev"
MIB = 1024 * 1024
SERVICE = "/jobsched.v1.JobService/"


# --- helpers ---------------------------------------------------------------------------------


def as_tenant(tenant: str) -> tuple[tuple[str, str], ...]:
    return ((TENANT_KEY, tenant),)


def ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


def dt(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def spec(job_type: str = "work", **fields: Any) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(type=job_type, **fields)


def sort_key(job: job_pb2.Job) -> tuple[int, int, str]:
    return (job.create_time.seconds, job.create_time.nanos, job.id)


@dataclass(frozen=True)
class Failure:
    """What a client sees of a failed RPC: code, message and the google.rpc.Status details."""

    code: grpc.StatusCode
    message: str
    reason: str
    fields: list[str]


def failure_of(err: grpc.aio.AioRpcError) -> Failure:
    status = rpc_status.from_call(err)
    assert status is not None, f"no google.rpc.Status in the trailers of {err.code()}"
    reason = ""
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == ERROR_DOMAIN
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
            assert all(v.description for v in bad.field_violations)
    return Failure(code=err.code(), message=err.details() or "", reason=reason, fields=fields)


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> Failure:
    """Await an RPC that must fail with `code`; return its rich status."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    failure = failure_of(raised.value)
    assert failure.code == code, f"{failure.code}: {failure.message}"
    return failure


async def invalid(call: Awaitable[Any]) -> list[str]:
    """Await an RPC that must be INVALID_ARGUMENT; return the fields its BadRequest names."""
    failure = await fails(call, Code.INVALID_ARGUMENT)
    assert failure.reason == "INVALID_ARGUMENT"
    assert failure.fields, "INVALID_ARGUMENT without BadRequest field violations"
    return failure.fields


async def submit(stub: Stub, job: job_pb2.JobSpec | None = None, tenant: str = "default") -> Any:
    response = await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=job or spec()), metadata=as_tenant(tenant)
    )
    assert response.created
    return response.job


async def submit_batch(
    stub: Stub, specs: Sequence[job_pb2.JobSpec], tenant: str = "default"
) -> list[job_pb2.Job]:
    response = await stub.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(jobs=specs), metadata=as_tenant(tenant)
    )
    return list(response.jobs)


async def get(stub: Stub, job_id: str, tenant: str = "default") -> Any:
    response = await stub.GetJobStatus(
        job_service_pb2.GetJobStatusRequest(id=job_id), metadata=as_tenant(tenant)
    )
    return response.job


async def events_of(stub: Stub, job_id: str) -> list[job_pb2.JobEvent]:
    response = await stub.GetJobStatus(
        job_service_pb2.GetJobStatusRequest(id=job_id, include_events=True)
    )
    return list(response.events)


async def walk_active(
    stub: Stub, request: job_service_pb2.ListActiveJobsRequest, tenant: str = "default"
) -> list[job_pb2.Job]:
    jobs: list[job_pb2.Job] = []
    page_request = job_service_pb2.ListActiveJobsRequest()
    page_request.CopyFrom(request)
    while True:
        page = await stub.ListActiveJobs(page_request, metadata=as_tenant(tenant))
        jobs.extend(page.jobs)
        if not page.next_page_token:
            return jobs
        page_request.page_token = page.next_page_token


async def walk_history(
    stub: Stub, request: job_service_pb2.GetJobHistoryRequest
) -> list[job_pb2.Job]:
    jobs: list[job_pb2.Job] = []
    page_request = job_service_pb2.GetJobHistoryRequest()
    page_request.CopyFrom(request)
    while True:
        page = await stub.GetJobHistory(page_request)
        jobs.extend(page.jobs)
        if not page.next_page_token:
            return jobs
        page_request.page_token = page.next_page_token


async def row_counts(db: Database) -> tuple[int, int]:
    """(jobs, job_events) rows in the whole database."""
    async with db.engine.connect() as c:
        jobs = await c.scalar(text("select count(*) from jobs"))
        events = await c.scalar(text("select count(*) from job_events"))
    return int(jobs or 0), int(events or 0)


async def rows_of(db: Database, job_id: str) -> tuple[int, int]:
    """(jobs, job_events) rows of one job."""
    async with db.engine.connect() as c:
        jobs = await c.scalar(
            text("select count(*) from jobs where id = cast(:id as uuid)"), {"id": job_id}
        )
        events = await c.scalar(
            text("select count(*) from job_events where job_id = cast(:id as uuid)"),
            {"id": job_id},
        )
    return int(jobs or 0), int(events or 0)


async def execute(db: Database, statement: str, job_id: str) -> None:
    async with db.engine.begin() as c:
        result = await c.execute(text(statement), {"id": job_id})
        assert result.rowcount == 1


async def make_running(db: Database, job_id: str) -> None:
    await execute(
        db,
        "UPDATE jobs SET state='running', attempt=1, started_at=now(), executor='x' "
        "WHERE id = cast(:id as uuid)",
        job_id,
    )


async def make_dead(db: Database, job_id: str) -> None:
    await execute(
        db,
        "UPDATE jobs SET state='dead', attempt=max_attempts, started_at=now(), "
        "finished_at=clock_timestamp(), last_error='boom', executor='x' "
        "WHERE id = cast(:id as uuid)",
        job_id,
    )


async def make_succeeded(db: Database, job_id: str) -> None:
    await execute(
        db,
        "UPDATE jobs SET state='succeeded', attempt=1, started_at=now(), "
        "finished_at=clock_timestamp(), result='\\x2a'::bytea, executor='x' "
        "WHERE id = cast(:id as uuid)",
        job_id,
    )


# --- 1. SubmitJob ----------------------------------------------------------------------------


async def test_submit_normalises_names_and_applies_defaults(jobs_stub: Stub) -> None:
    before = datetime.now(UTC)
    response = await jobs_stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(
            job=spec("Emails.Send_Welcome", queue="Mail-OUT", payload=b'{"to": "ada"}')
        )
    )
    job = response.job
    assert response.created
    assert uuid.UUID(job.id)
    assert (job.queue, job.type) == ("mail-out", "emails.send_welcome")
    assert (job.priority, job.max_attempts, job.attempt) == (50, 3, 0)
    assert job.state == S.JOB_STATE_QUEUED
    assert job.payload == b'{"to": "ada"}'
    assert dt(job.create_time) >= before - timedelta(seconds=5)
    assert dt(job.run_at) <= datetime.now(UTC)
    assert not job.HasField("finish_time")
    assert not job.HasField("start_time")
    assert not job.cancel_requested

    stored = await get(jobs_stub, job.id)
    assert stored.payload == b'{"to": "ada"}'
    assert (stored.queue, stored.type, stored.state) == ("mail-out", "emails.send_welcome", 3)
    assert (stored.priority, stored.max_attempts) == (50, 3)

    default_queue = await submit(jobs_stub, spec("Report"))
    assert (default_queue.queue, default_queue.type) == ("default", "report")


async def test_submit_keeps_explicit_values(jobs_stub: Stub) -> None:
    job = await submit(
        jobs_stub,
        spec(
            "work",
            priority=0,  # explicitly 0, not "unset": must not become the default 50
            max_attempts=1,
            labels={"team": "data", "env": "prod"},
            idempotency_key="key-explicit",
            timeout=Duration(seconds=30),
        ),
    )
    stored = await get(jobs_stub, job.id)
    for j in (job, stored):
        assert (j.priority, j.max_attempts) == (0, 1)
        assert dict(j.labels) == {"team": "data", "env": "prod"}
        assert j.idempotency_key == "key-explicit"
        assert j.timeout.ToTimedelta() == timedelta(seconds=30)


async def test_submit_future_run_at_is_scheduled_and_past_is_queued(jobs_stub: Stub) -> None:
    run_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=123456)
    scheduled = await submit(jobs_stub, spec(run_at=ts(run_at)))
    assert scheduled.state == S.JOB_STATE_SCHEDULED
    assert dt(scheduled.run_at) == run_at
    stored = await get(jobs_stub, scheduled.id)
    assert stored.state == S.JOB_STATE_SCHEDULED
    assert dt(stored.run_at) == run_at

    before = datetime.now(UTC)
    past = await submit(jobs_stub, spec(run_at=ts(before - timedelta(days=3))))
    assert past.state == S.JOB_STATE_QUEUED
    assert dt(past.run_at) >= before - timedelta(seconds=1)  # a past run_at means now

    # The limits themselves are allowed: exactly 1 MiB and (just under) 365 days ahead.
    edge = await submit(
        jobs_stub,
        spec(payload=b"x" * MIB, run_at=ts(datetime.now(UTC) + timedelta(days=365, seconds=-60))),
    )
    assert edge.state == S.JOB_STATE_SCHEDULED
    assert len((await get(jobs_stub, edge.id)).payload) == MIB


def _far() -> Timestamp:
    return ts(datetime.now(UTC) + timedelta(days=366))


BAD_SPECS = [
    pytest.param(lambda: spec(queue="9lives"), ["job.queue"], id="queue-leading-digit"),
    pytest.param(lambda: spec(queue="has space"), ["job.queue"], id="queue-space"),
    pytest.param(lambda: spec(queue="q" * 65), ["job.queue"], id="queue-too-long"),
    pytest.param(lambda: spec(""), ["job.type"], id="type-missing"),
    pytest.param(lambda: spec("send/email"), ["job.type"], id="type-slash"),
    pytest.param(lambda: spec(priority=101), ["job.priority"], id="priority-101"),
    pytest.param(lambda: spec(priority=-1), ["job.priority"], id="priority-negative"),
    pytest.param(lambda: spec(max_attempts=0), ["job.max_attempts"], id="max-attempts-0"),
    pytest.param(lambda: spec(max_attempts=101), ["job.max_attempts"], id="max-attempts-101"),
    pytest.param(lambda: spec(payload=b"x" * (MIB + 1)), ["job.payload"], id="payload-1MiB+1"),
    pytest.param(lambda: spec(run_at=_far()), ["job.run_at"], id="run-at-366-days"),
    pytest.param(
        lambda: spec(labels={f"k{i}": "v" for i in range(33)}), ["job.labels"], id="33-labels"
    ),
    pytest.param(
        lambda: spec(idempotency_key="k" * 201), ["job.idempotency_key"], id="key-too-long"
    ),
    pytest.param(lambda: spec(timeout=Duration(seconds=0)), ["job.timeout"], id="timeout-zero"),
    pytest.param(
        lambda: spec(timeout=Duration(seconds=8 * 86400)), ["job.timeout"], id="timeout-8-days"
    ),
]


@pytest.mark.parametrize(("make_spec", "expected"), BAD_SPECS)
async def test_submit_rejects_bad_field_and_writes_nothing(
    jobs_stub: Stub, db: Database, make_spec: Callable[[], job_pb2.JobSpec], expected: list[str]
) -> None:
    request = job_service_pb2.SubmitJobRequest(job=make_spec())
    assert await invalid(jobs_stub.SubmitJob(request)) == expected
    assert await row_counts(db) == (0, 0)


@pytest.mark.parametrize(
    ("labels", "key_text"),
    [
        pytest.param({"Bad Key": "v"}, "Bad Key", id="bad-key"),
        pytest.param({"ok": "v" * 257}, "ok", id="value-too-long"),
    ],
)
async def test_submit_rejects_bad_label(
    jobs_stub: Stub, db: Database, labels: dict[str, str], key_text: str
) -> None:
    [field] = await invalid(
        jobs_stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec(labels=labels)))
    )
    assert field.startswith("job.labels")
    assert key_text in field
    assert await row_counts(db) == (0, 0)


async def test_submit_names_every_bad_field_at_once(jobs_stub: Stub, db: Database) -> None:
    bad = spec(
        "",
        queue="1queue",
        priority=500,
        max_attempts=0,
        payload=b"x" * (MIB + 1),
        run_at=_far(),
        labels={f"k{i}": "v" for i in range(33)},
    )
    fields = await invalid(jobs_stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=bad)))
    assert sorted(fields) == sorted(
        [
            "job.queue",
            "job.type",
            "job.priority",
            "job.max_attempts",
            "job.payload",
            "job.run_at",
            "job.labels",
        ]
    )
    assert await row_counts(db) == (0, 0)


_FAR_FUTURE = Timestamp(seconds=10**12)  # year 33658: beyond google.protobuf.Timestamp's range
_OUT_OF_RANGE = [
    pytest.param(
        lambda stub: stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec(run_at=_FAR_FUTURE))),
        "job.run_at",
        id="submit-run-at-year-33658",
    ),
    pytest.param(
        lambda stub: stub.SubmitJob(
            job_service_pb2.SubmitJobRequest(job=spec(run_at=Timestamp(seconds=0, nanos=-1)))
        ),
        "job.run_at",
        id="submit-run-at-negative-nanos",
    ),
    pytest.param(
        lambda stub: stub.SubmitJob(
            job_service_pb2.SubmitJobRequest(job=spec(timeout=Duration(seconds=2**62)))
        ),
        "job.timeout",
        id="submit-timeout-2**62-seconds",
    ),
    pytest.param(
        lambda stub: stub.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(jobs=[spec(), spec(run_at=_FAR_FUTURE)])
        ),
        "jobs[1].run_at",
        id="submit-jobs-run-at-year-33658",
    ),
    pytest.param(
        lambda stub: stub.GetJobHistory(
            job_service_pb2.GetJobHistoryRequest(finish_time_after=_FAR_FUTURE)
        ),
        "finish_time_after",
        id="history-finish-time-after-year-33658",
    ),
]


@pytest.mark.parametrize(("make_call", "field"), _OUT_OF_RANGE)
async def test_out_of_range_timestamps_are_invalid_argument(
    jobs_stub: Stub, db: Database, make_call: Callable[[Stub], Awaitable[Any]], field: str
) -> None:
    assert await invalid(make_call(jobs_stub)) == [field]
    assert await row_counts(db) == (0, 0)


async def test_bad_tenant_metadata_is_invalid_argument(jobs_stub: Stub, db: Database) -> None:
    call = jobs_stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=spec()), metadata=as_tenant("not a tenant!")
    )
    assert await invalid(call) == [TENANT_KEY]
    assert await row_counts(db) == (0, 0)


# --- 2. idempotency --------------------------------------------------------------------------


async def test_idempotency_key_returns_the_first_job(jobs_stub: Stub, db: Database) -> None:
    request = job_service_pb2.SubmitJobRequest(
        job=spec("Work", queue="Q", payload=b"p", idempotency_key="order-42")
    )
    first = await jobs_stub.SubmitJob(request)
    second = await jobs_stub.SubmitJob(request)
    assert first.created
    assert not second.created
    assert second.job.id == first.job.id
    assert second.job.payload == b"p"
    assert second.job.idempotency_key == "order-42"
    assert await row_counts(db) == (1, 1)

    # Unique per tenant: another tenant gets its own job under the same key.
    other = await submit(
        jobs_stub, spec("work", queue="q", payload=b"p", idempotency_key="order-42"), tenant="other"
    )
    assert other.id != first.job.id

    # In a batch, a key that exists yields the existing job, and the rest are created.
    batch = await jobs_stub.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(
            jobs=[spec("work", queue="q", payload=b"p", idempotency_key="order-42"), spec()]
        )
    )
    assert list(batch.created) == [False, True]
    assert batch.jobs[0].id == first.job.id
    assert await row_counts(db) == (3, 3)


async def test_idempotency_key_reused_for_another_job(jobs_stub: Stub, db: Database) -> None:
    first = await submit(jobs_stub, spec(payload=b"one", idempotency_key="k"))
    failure = await fails(
        jobs_stub.SubmitJob(
            job_service_pb2.SubmitJobRequest(job=spec(payload=b"two", idempotency_key="k"))
        ),
        Code.ALREADY_EXISTS,
    )
    assert failure.reason == "IDEMPOTENCY_KEY_REUSED"
    assert first.id in failure.message
    assert await row_counts(db) == (1, 1)
    assert (await get(jobs_stub, first.id)).payload == b"one"


async def test_concurrent_submits_with_one_key_store_one_job(jobs_stub: Stub, db: Database) -> None:
    request = job_service_pb2.SubmitJobRequest(job=spec(payload=b"p", idempotency_key="race"))
    responses = await asyncio.gather(*(jobs_stub.SubmitJob(request) for _ in range(20)))
    assert sum(r.created for r in responses) == 1
    assert len({r.job.id for r in responses}) == 1
    assert await row_counts(db) == (1, 1)


# --- 3. SubmitJobs ---------------------------------------------------------------------------


async def test_submit_jobs_stores_500_in_request_order(jobs_stub: Stub, db: Database) -> None:
    specs = [
        spec(f"T{i % 7}", queue=f"Q{i % 3}", payload=str(i).encode(), labels={"i": str(i)})
        for i in range(500)
    ]
    response = await jobs_stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(jobs=specs))
    assert len(response.jobs) == 500
    assert list(response.created) == [True] * 500
    assert len({j.id for j in response.jobs}) == 500
    for i, job in enumerate(response.jobs):
        assert (job.labels["i"], job.type, job.queue) == (str(i), f"t{i % 7}", f"q{i % 3}")
        assert job.payload == b""  # the batch response carries no payloads
        assert job.state == S.JOB_STATE_QUEUED
    async with db.engine.connect() as c:
        rows = (await c.execute(text("select id, payload from jobs"))).all()
    payload_by_id = {str(r.id): bytes(r.payload) for r in rows}
    assert [payload_by_id[j.id] for j in response.jobs] == [str(i).encode() for i in range(500)]
    assert await row_counts(db) == (500, 500)


async def test_submit_jobs_with_one_bad_job_stores_nothing(jobs_stub: Stub, db: Database) -> None:
    specs = [spec() for _ in range(10)]
    specs[3] = spec(priority=1000)
    fields = await invalid(jobs_stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(jobs=specs)))
    assert fields == ["jobs[3].priority"]

    specs[7] = spec("", queue="Bad Queue")
    fields = await invalid(jobs_stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(jobs=specs)))
    assert sorted(fields) == ["jobs[3].priority", "jobs[7].queue", "jobs[7].type"]
    assert await row_counts(db) == (0, 0)


async def test_submit_jobs_rejects_duplicate_keys_in_batch(jobs_stub: Stub, db: Database) -> None:
    specs = [spec(idempotency_key="a"), spec(idempotency_key="b"), spec(idempotency_key="a")]
    fields = await invalid(jobs_stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(jobs=specs)))
    assert fields == ["jobs[2].idempotency_key"]
    assert await row_counts(db) == (0, 0)


async def test_submit_jobs_rejects_empty_and_oversized_batches(
    jobs_stub: Stub, db: Database
) -> None:
    assert await invalid(jobs_stub.SubmitJobs(job_service_pb2.SubmitJobsRequest())) == ["jobs"]
    too_many = job_service_pb2.SubmitJobsRequest(jobs=[spec() for _ in range(5001)])
    assert await invalid(jobs_stub.SubmitJobs(too_many)) == ["jobs"]
    assert await row_counts(db) == (0, 0)


# --- 4. GetJobStatus -------------------------------------------------------------------------


async def test_get_unknown_job_is_not_found(jobs_stub: Stub) -> None:
    missing = str(uuid.uuid4())
    failure = await fails(
        jobs_stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=missing)), Code.NOT_FOUND
    )
    assert failure.reason == "JOB_NOT_FOUND"
    assert missing in failure.message


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "not-a-uuid",
        "1234",
        "12345678-1234-1234-1234-12345678901",  # one digit short
        " 12345678-1234-1234-1234-123456789012",
        "{12345678-1234-1234-1234-123456789012}",
        "12345678-1234-1234-1234-12345678901g",
    ],
)
async def test_get_malformed_id_is_invalid_argument(jobs_stub: Stub, bad_id: str) -> None:
    call = jobs_stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=bad_id))
    assert await invalid(call) == ["id"]


async def test_get_accepts_upper_case_id(jobs_stub: Stub) -> None:
    job = await submit(jobs_stub)
    assert (await get(jobs_stub, job.id.upper())).id == job.id


async def test_get_with_events_returns_the_creation_event(jobs_stub: Stub) -> None:
    job = await submit(jobs_stub)
    plain = await jobs_stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job.id))
    assert list(plain.events) == []

    [event] = await events_of(jobs_stub, job.id)
    assert event.sequence == 1
    assert event.from_state == S.JOB_STATE_UNSPECIFIED
    assert event.to_state == S.JOB_STATE_QUEUED
    assert event.attempt == 0
    assert (event.reason, event.actor) == ("submitted", "client")
    assert event.create_time == job.create_time

    scheduled = await submit(jobs_stub, spec(run_at=ts(datetime.now(UTC) + timedelta(hours=1))))
    [event] = await events_of(jobs_stub, scheduled.id)
    assert event.to_state == S.JOB_STATE_SCHEDULED


async def test_tenants_are_isolated(jobs_stub: Stub) -> None:
    job = await submit(jobs_stub, spec(payload=b"secret"), tenant="a")
    assert (await get(jobs_stub, job.id, tenant="a")).payload == b"secret"
    assert (await get(jobs_stub, job.id, tenant="A")).id == job.id  # tenant is case-insensitive
    for other in ("b", "default"):
        failure = await fails(
            jobs_stub.GetJobStatus(
                job_service_pb2.GetJobStatusRequest(id=job.id), metadata=as_tenant(other)
            ),
            Code.NOT_FOUND,
        )
        assert failure.reason == "JOB_NOT_FOUND"
    # Nor can tenant b see, cancel or delete it.
    listed = await walk_active(jobs_stub, job_service_pb2.ListActiveJobsRequest(), tenant="b")
    assert listed == []
    await fails(
        jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=job.id), metadata=as_tenant("b")),
        Code.NOT_FOUND,
    )
    await fails(
        jobs_stub.DeleteJob(job_service_pb2.DeleteJobRequest(id=job.id), metadata=as_tenant("b")),
        Code.NOT_FOUND,
    )
    assert (await get(jobs_stub, job.id, tenant="a")).state == S.JOB_STATE_QUEUED


# --- 5. ListActiveJobs / GetJobHistory -------------------------------------------------------


async def test_list_active_page_sizes(jobs_stub: Stub) -> None:
    ids = {j.id for j in await submit_batch(jobs_stub, [spec() for _ in range(1200)])}

    default = await jobs_stub.ListActiveJobs(job_service_pb2.ListActiveJobsRequest(page_size=0))
    assert len(default.jobs) == 100
    assert default.next_page_token

    coerced = await jobs_stub.ListActiveJobs(job_service_pb2.ListActiveJobsRequest(page_size=5000))
    assert len(coerced.jobs) == 1000
    assert coerced.next_page_token
    rest = await jobs_stub.ListActiveJobs(
        job_service_pb2.ListActiveJobsRequest(page_size=5000, page_token=coerced.next_page_token)
    )
    assert len(rest.jobs) == 200
    assert rest.next_page_token == ""
    assert {j.id for j in [*coerced.jobs, *rest.jobs]} == ids

    # The page size may change between pages of one listing.
    first = await jobs_stub.ListActiveJobs(job_service_pb2.ListActiveJobsRequest(page_size=10))
    second = await jobs_stub.ListActiveJobs(
        job_service_pb2.ListActiveJobsRequest(page_size=20, page_token=first.next_page_token)
    )
    assert [j.id for j in [*first.jobs, *second.jobs]] == [j.id for j in coerced.jobs[:30]]

    # Exactly one full last page: no token pointing at an empty page.
    exact = await jobs_stub.ListActiveJobs(job_service_pb2.ListActiveJobsRequest(page_size=1000))
    last = await jobs_stub.ListActiveJobs(
        job_service_pb2.ListActiveJobsRequest(page_size=200, page_token=exact.next_page_token)
    )
    assert (len(last.jobs), last.next_page_token) == (200, "")

    for negative in (-1, -1000):
        call = jobs_stub.ListActiveJobs(job_service_pb2.ListActiveJobsRequest(page_size=negative))
        assert await invalid(call) == ["page_size"]
        call_h = jobs_stub.GetJobHistory(job_service_pb2.GetJobHistoryRequest(page_size=negative))
        assert await invalid(call_h) == ["page_size"]


async def test_list_active_empty_store(jobs_stub: Stub) -> None:
    page = await jobs_stub.ListActiveJobs(job_service_pb2.ListActiveJobsRequest())
    assert (list(page.jobs), page.next_page_token) == ([], "")
    history = await jobs_stub.GetJobHistory(job_service_pb2.GetJobHistoryRequest())
    assert (list(history.jobs), history.next_page_token) == ([], "")


async def test_page_tokens_are_bound_to_their_filters(jobs_stub: Stub) -> None:
    await submit_batch(jobs_stub, [spec(queue="a") for _ in range(5)], tenant="default")
    await submit_batch(jobs_stub, [spec(queue="a") for _ in range(5)], tenant="other")
    page = await jobs_stub.ListActiveJobs(
        job_service_pb2.ListActiveJobsRequest(queue="a", page_size=2)
    )
    token = page.next_page_token
    assert token

    # Same filters (queue names are case-insensitive): accepted.
    same = await jobs_stub.ListActiveJobs(
        job_service_pb2.ListActiveJobsRequest(queue="A", page_size=2, page_token=token)
    )
    assert len(same.jobs) == 2

    other_filters = [
        job_service_pb2.ListActiveJobsRequest(queue="b", page_token=token),
        job_service_pb2.ListActiveJobsRequest(page_token=token),
        job_service_pb2.ListActiveJobsRequest(queue="a", type="x", page_token=token),
        job_service_pb2.ListActiveJobsRequest(
            queue="a", states=[S.JOB_STATE_QUEUED], page_token=token
        ),
    ]
    for request in other_filters:
        assert await invalid(jobs_stub.ListActiveJobs(request)) == ["page_token"]
    # Another tenant, or the other list method, cannot use it either.
    call = jobs_stub.ListActiveJobs(
        job_service_pb2.ListActiveJobsRequest(queue="a", page_token=token),
        metadata=as_tenant("other"),
    )
    assert await invalid(call) == ["page_token"]
    call_h = jobs_stub.GetJobHistory(
        job_service_pb2.GetJobHistoryRequest(queue="a", page_token=token)
    )
    assert await invalid(call_h) == ["page_token"]


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "!!!not base64!!!",
        "e30",  # base64 of "{}"
        "eyJ2IjoxfQ",  # {"v":1}
        "A" * 5000,
    ],
)
async def test_garbage_page_token_is_rejected(jobs_stub: Stub, token: str) -> None:
    await submit(jobs_stub)
    call = jobs_stub.ListActiveJobs(job_service_pb2.ListActiveJobsRequest(page_token=token))
    assert await invalid(call) == ["page_token"]
    call_h = jobs_stub.GetJobHistory(job_service_pb2.GetJobHistoryRequest(page_token=token))
    assert await invalid(call_h) == ["page_token"]


async def test_list_active_filters_and_projection(jobs_stub: Stub, db: Database) -> None:
    later = ts(datetime.now(UTC) + timedelta(hours=1))
    q1_ta = await submit_batch(jobs_stub, [spec("ta", queue="q1", payload=b"P") for _ in range(3)])
    q1_tb = await submit_batch(jobs_stub, [spec("tb", queue="q1", payload=b"P") for _ in range(2)])
    q2_ta = await submit_batch(jobs_stub, [spec("ta", queue="q2", payload=b"P") for _ in range(4)])
    scheduled = await submit_batch(jobs_stub, [spec("tb", queue="q2", run_at=later)])
    running = await submit(jobs_stub, spec("ta", queue="q2", payload=b"P"))
    await make_running(db, running.id)
    cancelled = await submit(jobs_stub, spec("ta", queue="q1"))
    await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=cancelled.id))
    await submit(jobs_stub, spec("ta", queue="q1"), tenant="other")

    def ids(jobs: Sequence[job_pb2.Job]) -> set[str]:
        return {j.id for j in jobs}

    everything = await walk_active(jobs_stub, job_service_pb2.ListActiveJobsRequest(page_size=3))
    assert ids(everything) == ids([*q1_ta, *q1_tb, *q2_ta, *scheduled, running])
    assert [sort_key(j) for j in everything] == sorted(sort_key(j) for j in everything)
    for job in everything:
        assert job.payload == b""
        assert job.result == b""

    async def listed(**filters: Any) -> set[str]:
        return ids(
            await walk_active(
                jobs_stub, job_service_pb2.ListActiveJobsRequest(page_size=2, **filters)
            )
        )

    assert await listed(queue="Q1") == ids([*q1_ta, *q1_tb])
    assert await listed(type="TA") == ids([*q1_ta, *q2_ta, running])
    assert await listed(queue="q2", type="ta") == ids([*q2_ta, running])
    assert await listed(states=[S.JOB_STATE_SCHEDULED]) == ids(scheduled)
    assert await listed(states=[S.JOB_STATE_RUNNING]) == {running.id}
    assert await listed(states=[S.JOB_STATE_RUNNING, S.JOB_STATE_SCHEDULED]) == ids(
        [*scheduled, running]
    )
    assert await listed(states=[S.JOB_STATE_WAITING]) == set()
    assert await listed(queue="nope") == set()

    [run] = await walk_active(
        jobs_stub, job_service_pb2.ListActiveJobsRequest(states=[S.JOB_STATE_RUNNING])
    )
    assert (run.state, run.attempt, run.executor) == (S.JOB_STATE_RUNNING, 1, "x")

    for terminal in (S.JOB_STATE_CANCELLED, S.JOB_STATE_SUCCEEDED, S.JOB_STATE_DEAD):
        request = job_service_pb2.ListActiveJobsRequest(states=[S.JOB_STATE_QUEUED, terminal])
        assert await invalid(jobs_stub.ListActiveJobs(request)) == ["states"]
    bad_names = [
        job_service_pb2.ListActiveJobsRequest(queue="1bad"),
        job_service_pb2.ListActiveJobsRequest(type="bad type"),
    ]
    assert await invalid(jobs_stub.ListActiveJobs(bad_names[0])) == ["queue"]
    assert await invalid(jobs_stub.ListActiveJobs(bad_names[1])) == ["type"]


async def test_unspecified_state_filter_is_refused_and_no_filter_means_any(jobs_stub: Stub) -> None:
    # JOB_STATE_UNSPECIFIED is what a client sends for a misspelled state name: taking it as
    # "any state" silently widened the filter. An empty list is how to ask for any.
    job = await submit(jobs_stub)
    call = jobs_stub.ListActiveJobs(
        job_service_pb2.ListActiveJobsRequest(states=[S.JOB_STATE_UNSPECIFIED])
    )
    assert await invalid(call) == ["states[0]"]
    page = await jobs_stub.ListActiveJobs(job_service_pb2.ListActiveJobsRequest())
    assert [j.id for j in page.jobs] == [job.id]


async def test_history_filters_order_and_pages(jobs_stub: Stub, db: Database) -> None:
    jobs = await submit_batch(
        jobs_stub, [spec("ta" if i % 2 else "tb", queue="q1" if i < 4 else "q2") for i in range(6)]
    )
    cancelled: list[job_pb2.Job] = []
    for job in jobs:
        response = await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=job.id))
        cancelled.append(response.job)
    dead = await submit(jobs_stub, spec("ta", queue="q1", payload=b"P"))
    await make_dead(db, dead.id)
    succeeded = await submit(jobs_stub, spec("tb", queue="q2", payload=b"P"))
    await make_succeeded(db, succeeded.id)
    still_active = await submit(jobs_stub)

    history = await walk_history(jobs_stub, job_service_pb2.GetJobHistoryRequest(page_size=2))
    expected_order = [succeeded.id, dead.id, *reversed([j.id for j in cancelled])]
    assert [j.id for j in history] == expected_order
    assert still_active.id not in {j.id for j in history}
    finish_times = [dt(j.finish_time) for j in history]
    assert finish_times == sorted(finish_times, reverse=True)
    for job in history:
        assert job.payload == b""
        assert job.result == b""
        assert job.HasField("finish_time")
    assert (await get(jobs_stub, succeeded.id)).result == b"\x2a"  # but GetJobStatus has it

    async def history_ids(**filters: Any) -> list[str]:
        request = job_service_pb2.GetJobHistoryRequest(page_size=3, **filters)
        return [j.id for j in await walk_history(jobs_stub, request)]

    assert await history_ids(states=[S.JOB_STATE_CANCELLED]) == expected_order[2:]
    assert await history_ids(states=[S.JOB_STATE_DEAD]) == [dead.id]
    assert await history_ids(states=[S.JOB_STATE_SUCCEEDED, S.JOB_STATE_DEAD]) == [
        succeeded.id,
        dead.id,
    ]
    assert await history_ids(queue="Q1") == [
        i for i in expected_order if i in {dead.id, *(j.id for j in jobs[:4])}
    ]
    assert await history_ids(type="TA", states=[S.JOB_STATE_CANCELLED]) == [
        j.id for j in reversed(cancelled) if j.type == "ta"
    ]

    # finish_time_after is inclusive, finish_time_before exclusive.
    pivot = cancelled[2]
    after = await history_ids(finish_time_after=pivot.finish_time)
    assert after == [succeeded.id, dead.id, *reversed([j.id for j in cancelled[2:]])]
    before = await history_ids(finish_time_before=pivot.finish_time)
    assert before == [j.id for j in reversed(cancelled[:2])]
    window = await history_ids(
        finish_time_after=cancelled[1].finish_time, finish_time_before=cancelled[4].finish_time
    )
    assert window == [j.id for j in reversed(cancelled[1:4])]

    call = jobs_stub.GetJobHistory(
        job_service_pb2.GetJobHistoryRequest(
            finish_time_after=pivot.finish_time, finish_time_before=pivot.finish_time
        )
    )
    assert await invalid(call) == ["finish_time_after"]
    for active in (S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING):
        request = job_service_pb2.GetJobHistoryRequest(states=[S.JOB_STATE_CANCELLED, active])
        assert await invalid(jobs_stub.GetJobHistory(request)) == ["states"]

    # A history token is bound to its time window too.
    first = await jobs_stub.GetJobHistory(
        job_service_pb2.GetJobHistoryRequest(page_size=2, finish_time_after=pivot.finish_time)
    )
    assert first.next_page_token
    reuse = job_service_pb2.GetJobHistoryRequest(page_token=first.next_page_token)
    assert await invalid(jobs_stub.GetJobHistory(reuse)) == ["page_token"]


# --- 6. walking 10,000 active jobs while new ones arrive -------------------------------------


async def test_walk_10k_active_jobs_while_jobs_are_inserted(jobs_stub: Stub) -> None:
    original: list[str] = []
    for batch in range(10):
        specs = [spec("bulk", payload=f"{batch}-{i}".encode()) for i in range(1000)]
        original.extend(j.id for j in await submit_batch(jobs_stub, specs))
    assert len(set(original)) == 10_000

    walking_done = asyncio.Event()
    first_batch_stored = asyncio.Event()
    late: list[list[str]] = []

    async def keep_inserting() -> None:
        while not walking_done.is_set():
            batch = await submit_batch(jobs_stub, [spec("late") for _ in range(50)])
            late.append([j.id for j in batch])
            first_batch_stored.set()

    inserter = asyncio.create_task(keep_inserting())
    seen: Counter[str] = Counter()
    pages = 0
    batches_during_walk = 0
    try:
        await asyncio.wait_for(first_batch_stored.wait(), 10)
        batches_before_walk = len(late)
        request = job_service_pb2.ListActiveJobsRequest(page_size=100)
        previous: tuple[int, int, str] | None = None
        while True:
            page = await jobs_stub.ListActiveJobs(request)
            pages += 1
            assert 0 < len(page.jobs) <= 100
            for job in page.jobs:
                seen[job.id] += 1
                key = sort_key(job)
                assert previous is None or key > previous, "pages went backwards"
                previous = key
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        batches_during_walk = len(late) - batches_before_walk
    finally:
        walking_done.set()
        await inserter

    twice = [job_id for job_id, n in seen.items() if n > 1]
    assert twice == [], f"{len(twice)} jobs listed more than once"
    missing = set(original) - seen.keys()
    assert not missing, f"{len(missing)} of the original 10,000 jobs never listed"
    # Jobs committed before the walk started must be listed too (they sort after the originals).
    assert set(late[0]) <= seen.keys()
    assert batches_during_walk > 0, "nothing was inserted while walking"
    assert pages >= 100


# --- 7. CancelJob / RetryJob / DeleteJob -----------------------------------------------------


async def test_cancel_queued_and_scheduled_jobs(jobs_stub: Stub) -> None:
    job = await submit(jobs_stub)
    response = await jobs_stub.CancelJob(
        job_service_pb2.CancelJobRequest(id=job.id, reason="no longer needed")
    )
    assert response.job.state == S.JOB_STATE_CANCELLED
    assert response.job.HasField("finish_time")
    stored = await get(jobs_stub, job.id)
    assert stored.state == S.JOB_STATE_CANCELLED
    submitted, cancel = await events_of(jobs_stub, job.id)
    assert submitted.sequence == 1
    assert cancel.sequence == 2
    assert (cancel.from_state, cancel.to_state) == (S.JOB_STATE_QUEUED, S.JOB_STATE_CANCELLED)
    assert (cancel.reason, cancel.actor) == ("no longer needed", "client")

    later = ts(datetime.now(UTC) + timedelta(hours=1))
    scheduled = await submit(jobs_stub, spec(run_at=later))
    response = await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=scheduled.id))
    assert response.job.state == S.JOB_STATE_CANCELLED
    [_, cancel] = await events_of(jobs_stub, scheduled.id)
    assert cancel.from_state == S.JOB_STATE_SCHEDULED
    assert cancel.reason  # a default reason is recorded


async def test_concurrent_cancels_record_one_transition(jobs_stub: Stub) -> None:
    job = await submit(jobs_stub)
    request = job_service_pb2.CancelJobRequest(id=job.id)
    outcomes = await asyncio.gather(
        *(jobs_stub.CancelJob(request) for _ in range(10)), return_exceptions=True
    )
    cancelled = [o for o in outcomes if isinstance(o, job_service_pb2.CancelJobResponse)]
    refused = [failure_of(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(cancelled) == 1
    assert len(cancelled) + len(refused) == 10
    assert {(f.code, f.reason) for f in refused} <= {
        (Code.FAILED_PRECONDITION, "INVALID_TRANSITION")
    }
    events = await events_of(jobs_stub, job.id)
    assert [(e.sequence, e.to_state) for e in events] == [
        (1, S.JOB_STATE_QUEUED),
        (2, S.JOB_STATE_CANCELLED),
    ]


async def test_cancel_running_job_requests_cancellation(jobs_stub: Stub, db: Database) -> None:
    job = await submit(jobs_stub)
    await make_running(db, job.id)
    for _ in range(2):  # asking twice is harmless
        response = await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=job.id))
        assert response.job.state == S.JOB_STATE_RUNNING
        assert response.job.cancel_requested
    stored = await get(jobs_stub, job.id)
    assert (stored.state, stored.cancel_requested, stored.attempt) == (S.JOB_STATE_RUNNING, True, 1)
    assert not stored.HasField("finish_time")


async def test_cancel_terminal_job_is_failed_precondition(jobs_stub: Stub, db: Database) -> None:
    job = await submit(jobs_stub)
    await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=job.id))
    done = await submit(jobs_stub)
    await make_succeeded(db, done.id)
    for terminal in (job.id, done.id):
        failure = await fails(
            jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=terminal)),
            Code.FAILED_PRECONDITION,
        )
        assert failure.reason == "INVALID_TRANSITION"
    assert len(await events_of(jobs_stub, job.id)) == 2  # nothing appended
    assert (await get(jobs_stub, done.id)).state == S.JOB_STATE_SUCCEEDED

    missing = await fails(
        jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=str(uuid.uuid4()))),
        Code.NOT_FOUND,
    )
    assert missing.reason == "JOB_NOT_FOUND"
    long_reason = job_service_pb2.CancelJobRequest(id=job.id, reason="r" * 1001)
    assert await invalid(jobs_stub.CancelJob(long_reason)) == ["reason"]
    assert await invalid(jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id="x"))) == ["id"]


async def test_retry_cancelled_and_dead_jobs(jobs_stub: Stub, db: Database) -> None:
    job = await submit(jobs_stub)
    await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=job.id))
    retried = (await jobs_stub.RetryJob(job_service_pb2.RetryJobRequest(id=job.id))).job
    assert retried.state == S.JOB_STATE_QUEUED
    assert not retried.HasField("finish_time")
    *_, event = await events_of(jobs_stub, job.id)
    assert (event.sequence, event.from_state, event.to_state) == (
        3,
        S.JOB_STATE_CANCELLED,
        S.JOB_STATE_QUEUED,
    )
    assert event.actor == "client"
    active = await walk_active(jobs_stub, job_service_pb2.ListActiveJobsRequest())
    assert [j.id for j in active] == [job.id]
    assert await walk_history(jobs_stub, job_service_pb2.GetJobHistoryRequest()) == []

    dead = await submit(jobs_stub, spec(max_attempts=3))
    await make_dead(db, dead.id)
    revived = (await jobs_stub.RetryJob(job_service_pb2.RetryJobRequest(id=dead.id))).job
    assert revived.state == S.JOB_STATE_QUEUED
    assert revived.max_attempts == 4  # one more attempt granted, as they were exhausted
    assert revived.attempt == 3


async def test_retry_active_job_is_failed_precondition(jobs_stub: Stub, db: Database) -> None:
    queued = await submit(jobs_stub)
    running = await submit(jobs_stub)
    await make_running(db, running.id)
    for job_id in (queued.id, running.id):
        failure = await fails(
            jobs_stub.RetryJob(job_service_pb2.RetryJobRequest(id=job_id)),
            Code.FAILED_PRECONDITION,
        )
        assert failure.reason == "INVALID_TRANSITION"
    assert len(await events_of(jobs_stub, queued.id)) == 1
    assert (await get(jobs_stub, running.id)).state == S.JOB_STATE_RUNNING
    missing = await fails(
        jobs_stub.RetryJob(job_service_pb2.RetryJobRequest(id=str(uuid.uuid4()))), Code.NOT_FOUND
    )
    assert missing.reason == "JOB_NOT_FOUND"


async def test_delete_removes_job_and_history(jobs_stub: Stub, db: Database) -> None:
    job = await submit(jobs_stub)
    await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=job.id))
    queued = await submit(jobs_stub)
    keep = await submit(jobs_stub)
    assert await rows_of(db, job.id) == (1, 2)

    for job_id in (job.id, queued.id):
        assert await jobs_stub.DeleteJob(job_service_pb2.DeleteJobRequest(id=job_id)) == (
            job_service_pb2.DeleteJobResponse()
        )
        assert await rows_of(db, job_id) == (0, 0)
        failure = await fails(
            jobs_stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id)),
            Code.NOT_FOUND,
        )
        assert failure.reason == "JOB_NOT_FOUND"
    assert await rows_of(db, keep.id) == (1, 1)
    assert await row_counts(db) == (1, 1)

    again = await fails(
        jobs_stub.DeleteJob(job_service_pb2.DeleteJobRequest(id=job.id)), Code.NOT_FOUND
    )
    assert again.reason == "JOB_NOT_FOUND"


async def test_delete_running_job_is_refused(jobs_stub: Stub, db: Database) -> None:
    job = await submit(jobs_stub)
    await make_running(db, job.id)
    failure = await fails(
        jobs_stub.DeleteJob(job_service_pb2.DeleteJobRequest(id=job.id)), Code.FAILED_PRECONDITION
    )
    assert failure.reason == "INVALID_TRANSITION"
    assert await rows_of(db, job.id) == (1, 1)
    assert (await get(jobs_stub, job.id)).state == S.JOB_STATE_RUNNING


async def test_delete_unknown_or_malformed_id(jobs_stub: Stub) -> None:
    failure = await fails(
        jobs_stub.DeleteJob(job_service_pb2.DeleteJobRequest(id=str(uuid.uuid4()))),
        Code.NOT_FOUND,
    )
    assert failure.reason == "JOB_NOT_FOUND"
    assert await invalid(jobs_stub.DeleteJob(job_service_pb2.DeleteJobRequest(id="nope"))) == ["id"]


# --- 8. health follows the database ----------------------------------------------------------

HEALTH_SERVICE = "jobsched.v1.JobService"


@contextlib.asynccontextmanager
async def database_refusing_connections(database_url: str) -> AsyncIterator[None]:
    """Make this test's database unreachable (no new connections, existing ones terminated);
    always allow connections again afterwards, so that the fixture can drop it."""
    url = make_url(database_url)
    name = url.database
    assert name
    admin_url = url.set(drivername="postgresql", database="postgres")
    admin = await asyncpg.connect(admin_url.render_as_string(hide_password=False))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


async def wait_for_health(channel: grpc.aio.Channel, status: int, within: float = 15) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=HEALTH_SERVICE)

    async def reached() -> None:
        assert (await health.Check(request)).status == status

    await assert_eventually(reached, within)


@pytest.mark.timeout(90)
async def test_health_follows_database(
    channel: grpc.aio.Channel, jobs_stub: Stub, db: Database, database_url: str
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert (await health.Check(health_pb2.HealthCheckRequest(service=HEALTH_SERVICE))).status == (
        serving
    )
    assert (await health.Check(health_pb2.HealthCheckRequest(service=""))).status == serving
    before = await submit(jobs_stub)

    async with database_refusing_connections(database_url):
        await wait_for_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
        with pytest.raises(grpc.aio.AioRpcError):
            await jobs_stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec()))

    await wait_for_health(channel, serving)

    async def submit_works() -> Any:
        try:
            return await submit(jobs_stub, spec(payload=b"after"))
        except grpc.aio.AioRpcError as err:
            raise AssertionError(f"{err.code()}: {err.details()}") from err

    after = await assert_eventually(submit_works, 15)
    assert (await get(jobs_stub, after.id)).payload == b"after"
    assert (await get(jobs_stub, before.id)).id == before.id
    assert await row_counts(db) == (2, 2)  # nothing was written during the outage


@pytest.mark.timeout(90)
async def test_submit_is_unavailable_while_database_refuses_connections(
    channel: grpc.aio.Channel, jobs_stub: Stub, database_url: str
) -> None:
    async with database_refusing_connections(database_url):
        await wait_for_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
        # More calls than the pool holds: the first may meet a terminated pooled connection,
        # the rest have to open new ones, which the server refuses.
        for _ in range(12):
            failure = await fails(
                jobs_stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec())),
                Code.UNAVAILABLE,
            )
            assert failure.reason == "DATABASE_UNAVAILABLE"


async def test_health_of_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert raised.value.code() == Code.NOT_FOUND


# --- 9. reflection ---------------------------------------------------------------------------


async def test_reflection_lists_and_describes_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="jobsched.v1.JobService"),
    ]
    responses = [r async for r in stub.ServerReflectionInfo(iter(requests))]
    assert len(responses) == 2
    services = {s.name for s in responses[0].list_services_response.service}
    assert {"jobsched.v1.JobService", "grpc.health.v1.Health"} <= services

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in responses[1].file_descriptor_response.file_descriptor_proto
    ]
    [job_service] = [f for f in files if f.name == "jobsched/v1/job_service.proto"]
    [service] = job_service.service
    assert service.name == "JobService"
    assert {"SubmitJob", "SubmitJobs", "GetJobStatus", "ListActiveJobs", "DeleteJob"} <= {
        m.name for m in service.method
    }


# --- 10. access log --------------------------------------------------------------------------


async def test_access_log_has_one_line_per_rpc(
    jobs_stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched.rpc")
    await fails(
        jobs_stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=str(uuid.uuid4()))),
        Code.NOT_FOUND,
    )
    await submit(jobs_stub)
    await invalid(jobs_stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec(""))))

    async def three_lines() -> list[logging.LogRecord]:
        records = [r for r in caplog.records if r.name == "jobsched.rpc"]
        assert len(records) == 3
        return records

    records = await assert_eventually(three_lines)
    fields = [getattr(r, "fields", None) for r in records]
    assert [(f["method"], f["code"]) for f in fields if isinstance(f, dict)] == [
        (SERVICE + "GetJobStatus", "NOT_FOUND"),
        (SERVICE + "SubmitJob", "OK"),
        (SERVICE + "SubmitJob", "INVALID_ARGUMENT"),
    ]
    for record in records:
        line = JsonFormatter().format(record)
        assert "\n" not in line
        body = json.loads(line)
        assert body["logger"] == "jobsched.rpc"
        assert isinstance(body["duration_ms"], float | int)
        assert 0 <= body["duration_ms"] < 60_000
        assert body["peer"]


async def test_server_streaming_rpcs_pass_the_interceptors(
    jobs_stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    # A server stream goes through the same error mapping and access log as unary calls.
    caplog.set_level(logging.INFO, logger="jobsched.rpc")
    call = jobs_stub.WatchJob(job_service_pb2.WatchJobRequest(id=str(uuid.uuid4())))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert failure_of(raised.value).reason == "JOB_NOT_FOUND"

    async def logged() -> dict[str, Any]:
        lines = [getattr(r, "fields", {}) for r in caplog.records if r.name == "jobsched.rpc"]
        assert lines
        assert lines[-1]["method"] == SERVICE + "WatchJob"
        return dict(lines[-1])

    assert (await assert_eventually(logged))["code"] == "NOT_FOUND"
