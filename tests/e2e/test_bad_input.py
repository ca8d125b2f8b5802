"""Bad input of every kind is INVALID_ARGUMENT naming the field, and writes nothing.

- text PostgreSQL cannot store (NUL) in any field a client sends, refused by the validation
  (before: the driver's error and the SQL text came back as UNKNOWN);
- echoed values are shortened and violations capped, so that an error about a huge input stays
  small enough for the client's metadata limit (before: RESOURCE_EXHAUSTED "Stream removed");
- every Duration and Timestamp checked (nanos in range, signs agreeing; before: nanos of 2e9
  were 2 more seconds);
- enum values: JOB_STATE_UNSPECIFIED and unknown numbers in a filter, unknown policies.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc.error_details_pb2 import BadRequest
from grpc_status import rpc_status
from sqlalchemy import text

from jobsched.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
)
from scheduler.store.database import Database
from tests.e2e.test_job_service import failure_of, invalid, spec, submit

if TYPE_CHECKING:
    Stub = job_service_pb2_grpc.JobServiceAsyncStub

Code = grpc.StatusCode
S = job_pb2.JobState
NUL = "a\x00b"
HUGE = "x" * 100_000
# The client's default limit on received metadata is 8 KiB; keep well below it.
MAX_ERROR_BYTES = 4096


@pytest.fixture
def queues_stub(channel: grpc.aio.Channel) -> Any:
    return queue_service_pb2_grpc.QueueServiceStub(channel)


@pytest.fixture
def schedules_stub(channel: grpc.aio.Channel) -> Any:
    return schedule_service_pb2_grpc.ScheduleServiceStub(channel)


async def counts(db: Database) -> dict[str, int]:
    """Rows of every table a client's request can write."""
    out = {}
    async with db.read() as conn:
        for table in ("jobs", "job_events", "queues", "schedules", "job_dependencies"):
            out[table] = int(await conn.scalar(text(f"select count(*) from {table}")) or 0)
    return out


def schedule(**fields: Any) -> schedule_service_pb2.Schedule:
    values: dict[str, Any] = {"name": "nightly", "cron": "0 2 * * *", "job_template": spec()}
    values.update(fields)
    return schedule_service_pb2.Schedule(**values)


def create(stub: Any, **fields: Any) -> Any:
    return stub.CreateSchedule(
        schedule_service_pb2.CreateScheduleRequest(schedule=schedule(**fields))
    )


def submit_job(stub: Stub, **fields: Any) -> Awaitable[Any]:
    return stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec(**fields)))


def update_queue(stub: Any, mask: list[str] | None = None, **fields: Any) -> Any:
    request = queue_service_pb2.UpdateQueueRequest(
        queue=queue_service_pb2.Queue(**{"name": "q", **fields})
    )
    if mask is not None:
        request.update_mask.CopyFrom(FieldMask(paths=mask))
    return stub.UpdateQueue(request)


Call = Callable[[Any, Any, Any], Awaitable[Any]]  # (jobs, queues, schedules) -> call

# --- text PostgreSQL cannot store ------------------------------------------------------------

NUL_CASES: list[Any] = [
    pytest.param(
        lambda j, q, s: submit_job(j, labels={"k": NUL}), "job.labels['k']", id="label-value"
    ),
    pytest.param(lambda j, q, s: submit_job(j, labels={NUL: "v"}), None, id="label-key"),
    pytest.param(
        lambda j, q, s: submit_job(j, idempotency_key=NUL), "job.idempotency_key", id="idem-key"
    ),
    pytest.param(lambda j, q, s: submit_job(j, queue=NUL), "job.queue", id="queue"),
    pytest.param(lambda j, q, s: submit_job(j, job_type=NUL), "job.type", id="type"),
    pytest.param(lambda j, q, s: submit_job(j, ref=NUL), "job.ref", id="ref"),
    pytest.param(
        lambda j, q, s: j.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(jobs=[spec(), spec(labels={"k": NUL})])
        ),
        "jobs[1].labels['k']",
        id="batch-label-value",
    ),
    pytest.param(
        lambda j, q, s: j.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(jobs=[spec(ref="a"), spec(depends_on_refs=[NUL])])
        ),
        "jobs[1].depends_on_refs[0]",
        id="batch-depends-on-ref",
    ),
    pytest.param(
        lambda j, q, s: j.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec(depends_on=[NUL]))),
        "job.depends_on[0]",
        id="depends-on",
    ),
    pytest.param(
        lambda j, q, s: j.ListActiveJobs(job_service_pb2.ListActiveJobsRequest(queue=NUL)),
        "queue",
        id="list-queue-filter",
    ),
    pytest.param(
        lambda j, q, s: j.GetJobHistory(job_service_pb2.GetJobHistoryRequest(type=NUL)),
        "type",
        id="history-type-filter",
    ),
    pytest.param(
        lambda j, q, s: j.ListActiveJobs(job_service_pb2.ListActiveJobsRequest(page_token=NUL)),
        "page_token",
        id="page-token",
    ),
    pytest.param(
        lambda j, q, s: j.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=NUL)),
        "id",
        id="job-id",
    ),
    pytest.param(
        lambda j, q, s: q.GetQueue(queue_service_pb2.GetQueueRequest(name=NUL)), "name", id="queue"
    ),
    pytest.param(lambda j, q, s: update_queue(q, name=NUL), "queue.name", id="update-queue-name"),
    pytest.param(
        lambda j, q, s: update_queue(q, mask=[NUL]), "update_mask.paths[0]", id="update-mask"
    ),
    pytest.param(lambda j, q, s: create(s, name=NUL), "schedule.name", id="schedule-name"),
    pytest.param(lambda j, q, s: create(s, cron=NUL), "schedule.cron", id="schedule-cron"),
    pytest.param(
        lambda j, q, s: create(s, time_zone=NUL), "schedule.time_zone", id="schedule-zone"
    ),
    pytest.param(
        lambda j, q, s: create(s, job_template=spec(labels={"k": NUL})),
        "schedule.job_template.labels['k']",
        id="schedule-template-label",
    ),
    pytest.param(
        lambda j, q, s: s.GetSchedule(schedule_service_pb2.GetScheduleRequest(id=NUL)),
        "id",
        id="schedule-ref",
    ),
]


@pytest.mark.parametrize(("make_call", "field"), NUL_CASES)
async def test_nul_in_any_text_field_is_invalid_argument_and_writes_nothing(
    jobs_stub: Stub,
    queues_stub: Any,
    schedules_stub: Any,
    db: Database,
    make_call: Call,
    field: str | None,
) -> None:
    before = await counts(db)
    fields = await invalid(make_call(jobs_stub, queues_stub, schedules_stub))
    if field is None:
        assert len(fields) == 1  # the path names the key, which holds the NUL itself
    else:
        assert fields == [field]
    assert await counts(db) == before


async def test_nul_in_a_cancel_reason_is_invalid_argument_and_cancels_nothing(
    jobs_stub: Stub, db: Database
) -> None:
    job = await submit(jobs_stub)
    before = await counts(db)
    call = jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=job.id, reason=NUL))
    assert await invalid(call) == ["reason"]
    assert await counts(db) == before
    status = await jobs_stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job.id))
    assert status.job.state == S.JOB_STATE_QUEUED
    assert not status.job.cancel_requested


async def test_a_data_exception_of_the_store_is_invalid_argument_without_sql(
    db: Database,
) -> None:
    """The backstop at the store boundary: a value the validation let through but PostgreSQL
    refuses (SQLSTATE class 22) is InvalidArgument, with neither SQL nor driver text."""
    from scheduler.domain.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as raised:
        async with db.read() as conn:
            await conn.execute(text("SELECT CAST(:value AS text)"), {"value": NUL})
    message = raised.value.message
    assert "SELECT" not in message
    assert "asyncpg" not in message.lower()
    assert "sqlalchemy" not in message.lower()
    assert [v.field for v in raised.value.violations] == ["request"]


# --- echoed values are bounded ---------------------------------------------------------------


def _unknown_dependencies(count: int) -> job_pb2.JobSpec:
    return spec(depends_on=[str(uuid.uuid4()) for _ in range(count)])


HUGE_CASES: list[Any] = [
    pytest.param(lambda j, q, s: submit_job(j, job_type=HUGE), id="100kB-type"),
    pytest.param(lambda j, q, s: submit_job(j, queue=HUGE), id="100kB-queue"),
    pytest.param(lambda j, q, s: submit_job(j, labels={HUGE: "v"}), id="100kB-label-key"),
    pytest.param(lambda j, q, s: submit_job(j, ref=HUGE), id="100kB-ref"),
    pytest.param(lambda j, q, s: create(s, time_zone=HUGE), id="100kB-time-zone"),
    pytest.param(lambda j, q, s: create(s, cron=HUGE), id="100kB-cron"),
    pytest.param(lambda j, q, s: create(s, name=HUGE), id="100kB-schedule-name"),
    pytest.param(
        lambda j, q, s: j.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=HUGE)),
        id="100kB-job-id",
    ),
    pytest.param(
        lambda j, q, s: j.ListActiveJobs(job_service_pb2.ListActiveJobsRequest(queue=HUGE)),
        id="100kB-queue-filter",
    ),
    pytest.param(lambda j, q, s: update_queue(q, mask=[HUGE]), id="100kB-mask-path"),
    pytest.param(
        lambda j, q, s: j.SubmitJob(
            job_service_pb2.SubmitJobRequest(job=_unknown_dependencies(5000))
        ),
        id="5000-unknown-depends-on",
    ),
    pytest.param(
        lambda j, q, s: j.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(jobs=[spec(job_type=f"{i}bad") for i in range(5000)])
        ),
        id="5000-bad-types",
    ),
    pytest.param(
        lambda j, q, s: j.SubmitJob(
            job_service_pb2.SubmitJobRequest(job=spec(depends_on=[HUGE[:2000]] * 5000))
        ),
        id="5000-long-bad-ids",
    ),
]


@pytest.mark.parametrize("make_call", HUGE_CASES)
async def test_errors_about_huge_input_stay_small(
    jobs_stub: Stub, queues_stub: Any, schedules_stub: Any, db: Database, make_call: Call
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await make_call(jobs_stub, queues_stub, schedules_stub)
    err = raised.value
    assert err.code() == Code.INVALID_ARGUMENT, f"{err.code()}: {(err.details() or '')[:200]}"
    failure = failure_of(err)
    assert failure.fields
    assert len(failure.fields) <= 101  # at most 100, and one saying how many more
    assert len(failure.message) < MAX_ERROR_BYTES
    trailing = sum(len(k) + len(v) for k, v in err.trailing_metadata() or ())
    assert trailing < 2 * MAX_ERROR_BYTES
    assert (await counts(db))["jobs"] == 0


async def test_many_violations_are_capped_and_say_how_many_more(jobs_stub: Stub) -> None:
    """At most 100 violations are listed, fewer when they would not fit the status's byte
    budget; the last one says how many more there are, and so does the message."""
    call = jobs_stub.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(jobs=[spec(job_type=f"{i}bad") for i in range(300)])
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    status = rpc_status.from_call(raised.value)
    assert status is not None
    [bad] = [_unpack_bad_request(d) for d in status.details if d.Is(BadRequest.DESCRIPTOR)]
    *listed, summary = bad.field_violations
    assert 10 <= len(listed) <= 100
    assert [v.field for v in listed] == [f"jobs[{i}].type" for i in range(len(listed))]
    assert summary.field in ("jobs", "request")
    assert f"and {300 - len(listed)} more" in summary.description
    assert "more" in status.message
    assert len(status.message) <= 1000


def _unpack_bad_request(detail: Any) -> BadRequest:
    bad = BadRequest()
    detail.Unpack(bad)
    return bad


# --- Durations and Timestamps ----------------------------------------------------------------

BAD_DURATIONS = [
    pytest.param(Duration(seconds=1, nanos=2_000_000_000), id="nanos-2e9"),
    pytest.param(Duration(seconds=1, nanos=-1), id="signs-disagree"),
    pytest.param(Duration(seconds=-1, nanos=5), id="signs-disagree-negative"),
    pytest.param(Duration(seconds=315_576_000_001), id="beyond-10000-years"),
]
BAD_TIMESTAMPS = [
    pytest.param(Timestamp(seconds=1_800_000_000, nanos=1_000_000_000), id="nanos-1e9"),
    pytest.param(Timestamp(seconds=1_800_000_000, nanos=-1), id="negative-nanos"),
]


def _retry(**fields: Any) -> job_pb2.RetryPolicy:
    return job_pb2.RetryPolicy(**fields)


DURATION_FIELDS: list[Any] = [
    pytest.param(lambda j, q, s, d: submit_job(j, timeout=d), "job.timeout", id="job-timeout"),
    pytest.param(
        lambda j, q, s, d: submit_job(j, retry_policy=_retry(initial_backoff=d)),
        "job.retry_policy.initial_backoff",
        id="job-initial-backoff",
    ),
    pytest.param(
        lambda j, q, s, d: submit_job(j, retry_policy=_retry(max_backoff=d)),
        "job.retry_policy.max_backoff",
        id="job-max-backoff",
    ),
    pytest.param(
        lambda j, q, s, d: update_queue(q, default_timeout=d),
        "queue.default_timeout",
        id="queue-timeout",
    ),
    pytest.param(
        lambda j, q, s, d: update_queue(q, retention=d), "queue.retention", id="queue-retention"
    ),
    pytest.param(
        lambda j, q, s, d: update_queue(q, default_retry_policy=_retry(initial_backoff=d)),
        "queue.default_retry_policy.initial_backoff",
        id="queue-initial-backoff",
    ),
    pytest.param(
        lambda j, q, s, d: update_queue(q, default_retry_policy=_retry(max_backoff=d)),
        "queue.default_retry_policy.max_backoff",
        id="queue-max-backoff",
    ),
    pytest.param(
        lambda j, q, s, d: create(s, catchup_window=d),
        "schedule.catchup_window",
        id="catchup-window",
    ),
    pytest.param(
        lambda j, q, s, d: create(s, job_template=spec(timeout=d)),
        "schedule.job_template.timeout",
        id="template-timeout",
    ),
]


@pytest.mark.parametrize("duration", BAD_DURATIONS)
@pytest.mark.parametrize(("make_call", "field"), DURATION_FIELDS)
async def test_malformed_durations_are_invalid_argument(
    jobs_stub: Stub,
    queues_stub: Any,
    schedules_stub: Any,
    db: Database,
    make_call: Callable[..., Awaitable[Any]],
    field: str,
    duration: Duration,
) -> None:
    before = await counts(db)
    assert await invalid(make_call(jobs_stub, queues_stub, schedules_stub, duration)) == [field]
    assert await counts(db) == before


TIMESTAMP_FIELDS: list[Any] = [
    pytest.param(lambda j, t: submit_job(j, run_at=t), "job.run_at", id="run-at"),
    pytest.param(
        lambda j, t: j.SubmitJobs(job_service_pb2.SubmitJobsRequest(jobs=[spec(run_at=t)])),
        "jobs[0].run_at",
        id="batch-run-at",
    ),
    pytest.param(
        lambda j, t: j.GetJobHistory(job_service_pb2.GetJobHistoryRequest(finish_time_after=t)),
        "finish_time_after",
        id="history-after",
    ),
    pytest.param(
        lambda j, t: j.GetJobHistory(job_service_pb2.GetJobHistoryRequest(finish_time_before=t)),
        "finish_time_before",
        id="history-before",
    ),
    pytest.param(
        lambda j, t: j.RetryJobs(job_service_pb2.RetryJobsRequest(finish_time_after=t)),
        "finish_time_after",
        id="retry-jobs-after",
    ),
    pytest.param(
        lambda j, t: j.RetryJobs(job_service_pb2.RetryJobsRequest(finish_time_before=t)),
        "finish_time_before",
        id="retry-jobs-before",
    ),
]


@pytest.mark.parametrize("timestamp", BAD_TIMESTAMPS)
@pytest.mark.parametrize(("make_call", "field"), TIMESTAMP_FIELDS)
async def test_malformed_timestamps_are_invalid_argument(
    jobs_stub: Stub,
    db: Database,
    make_call: Callable[..., Awaitable[Any]],
    field: str,
    timestamp: Timestamp,
) -> None:
    assert await invalid(make_call(jobs_stub, timestamp)) == [field]
    assert (await counts(db))["jobs"] == 0


async def test_a_well_formed_negative_duration_is_still_refused_by_its_bounds(
    jobs_stub: Stub,
) -> None:
    assert await invalid(submit_job(jobs_stub, timeout=Duration(seconds=-1, nanos=-5))) == [
        "job.timeout"
    ]


# --- enums -----------------------------------------------------------------------------------

STATE_FILTERS: list[Any] = [
    pytest.param(
        lambda j, states: j.ListActiveJobs(job_service_pb2.ListActiveJobsRequest(states=states)),
        id="list-active",
    ),
    pytest.param(
        lambda j, states: j.GetJobHistory(job_service_pb2.GetJobHistoryRequest(states=states)),
        id="history",
    ),
    pytest.param(
        lambda j, states: j.RetryJobs(job_service_pb2.RetryJobsRequest(states=states)),
        id="retry-jobs",
    ),
    pytest.param(
        lambda j, states: _first_of(j.WatchJobs(job_service_pb2.WatchJobsRequest(states=states))),
        id="watch-jobs",
    ),
]


async def _first_of(stream: Any) -> Any:
    async for item in stream:
        return item
    return None


@pytest.mark.parametrize(
    ("states", "field"),
    [
        pytest.param([S.JOB_STATE_UNSPECIFIED], "states[0]", id="unspecified"),
        pytest.param(
            [S.JOB_STATE_DEAD, S.JOB_STATE_UNSPECIFIED], "states[1]", id="unspecified-2nd"
        ),
        pytest.param([99], "states[0]", id="unknown-99"),
    ],
)
@pytest.mark.parametrize("make_call", STATE_FILTERS)
async def test_unspecified_or_unknown_state_filters_are_invalid_argument(
    jobs_stub: Stub, make_call: Callable[..., Awaitable[Any]], states: list[int], field: str
) -> None:
    await submit(jobs_stub)
    assert await invalid(make_call(jobs_stub, states)) == [field]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"overlap_policy": 99}, "schedule.overlap_policy", id="overlap-99"),
        pytest.param({"catchup_policy": 99}, "schedule.catchup_policy", id="catchup-99"),
    ],
)
async def test_unknown_policies_are_invalid_argument(
    schedules_stub: Any, db: Database, fields: dict[str, int], field: str
) -> None:
    assert await invalid(create(schedules_stub, **fields)) == [field]
    assert (await counts(db))["schedules"] == 0
