"""Job-type defaults over gRPC: JobTypeService (set, show, list, clear with update masks; bad
input names the field and writes nothing) and the precedence at submit, job > type > queue >
built-in default for max_attempts, timeout and each retry policy field on its own, with
Job.setting_origins saying where each came from. Resolved once at submit: a job keeps what it
got when its type changes later."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import text

from jobsched.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    job_type_service_pb2,
    job_type_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
)
from scheduler.store.database import Database
from tests.e2e.test_job_service import as_tenant, invalid
from tests.scripted import ScriptedExecutor, connect, state_of

if TYPE_CHECKING:  # the async stubs exist only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub
    TypeStub = job_type_service_pb2_grpc.JobTypeServiceAsyncStub
    QueueStub = queue_service_pb2_grpc.QueueServiceAsyncStub

JobType = job_type_service_pb2.JobType
Policy = job_pb2.RetryPolicy
JOB, TYPE, QUEUE, DEFAULT = (
    job_pb2.SETTING_SOURCE_JOB,
    job_pb2.SETTING_SOURCE_TYPE,
    job_pb2.SETTING_SOURCE_QUEUE,
    job_pb2.SETTING_SOURCE_DEFAULT,
)
SETTINGS = (
    "max_attempts",
    "timeout",
    "retry_policy.initial_backoff",
    "retry_policy.backoff_multiplier",
    "retry_policy.max_backoff",
    "retry_policy.jitter",
)


def seconds(value: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=value))
    return d


@pytest.fixture
def types(channel: grpc.aio.Channel) -> TypeStub:
    return job_type_service_pb2_grpc.JobTypeServiceStub(channel)


@pytest.fixture
def queues(channel: grpc.aio.Channel) -> QueueStub:
    return queue_service_pb2_grpc.QueueServiceStub(channel)


async def update(
    types: TypeStub, mask: list[str] | None = None, tenant: str = "default", **fields: Any
) -> JobType:
    request = job_type_service_pb2.UpdateJobTypeRequest(job_type=JobType(**fields))
    if mask is not None:
        request.update_mask.CopyFrom(FieldMask(paths=mask))
    response = await types.UpdateJobType(request, metadata=as_tenant(tenant))
    return response.job_type


async def get(types: TypeStub, name: str) -> JobType:
    return (await types.GetJobType(job_type_service_pb2.GetJobTypeRequest(name=name))).job_type


async def submit(stub: Stub, tenant: str = "default", **spec: Any) -> job_pb2.Job:
    spec.setdefault("type", "work")
    response = await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(**spec)), metadata=as_tenant(tenant)
    )
    return response.job


def origins(job: job_pb2.Job) -> dict[str, int]:
    found: dict[str, int] = {o.setting: o.source for o in job.setting_origins}
    assert [o.setting for o in job.setting_origins] == list(SETTINGS)
    return found


async def test_set_show_list_and_clear(types: TypeStub) -> None:
    never = await get(types, "Never.Configured")
    assert never == JobType(name="never.configured")  # empty settings, no update_time

    resize = await update(
        types,
        name="Resize",
        max_attempts=5,
        timeout=seconds(300),
        retry_policy=Policy(initial_backoff=seconds(10), jitter=0),
    )
    assert resize.name == "resize"
    assert resize.max_attempts == 5
    assert resize.timeout == seconds(300)
    assert resize.retry_policy == Policy(initial_backoff=seconds(10), jitter=0)
    assert resize.HasField("update_time")
    assert await get(types, "RESIZE") == resize

    # A mask changes only its paths; a path whose field is unset clears it (inherit again).
    changed = await update(
        types,
        mask=["timeout", "retry_policy.jitter", "retry_policy.max_backoff"],
        name="resize",
        max_attempts=9,  # not in the mask: ignored
        timeout=seconds(60),
        retry_policy=Policy(max_backoff=seconds(120)),
    )
    assert changed.max_attempts == 5
    assert changed.timeout == seconds(60)
    assert changed.retry_policy == Policy(initial_backoff=seconds(10), max_backoff=seconds(120))

    await update(types, name="encode", max_attempts=2)
    await update(types, name="archive", timeout=seconds(1))
    first = await types.ListJobTypes(job_type_service_pb2.ListJobTypesRequest(page_size=2))
    assert [t.name for t in first.job_types] == ["archive", "encode"]
    assert first.next_page_token
    second = await types.ListJobTypes(
        job_type_service_pb2.ListJobTypesRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [t.name for t in second.job_types] == ["resize"]
    assert second.job_types[0] == await get(types, "resize")
    assert second.next_page_token == ""

    # Clearing every setting: the type is as if never configured, and no longer listed.
    cleared = await update(types, mask=["max_attempts"], name="encode")
    assert cleared == JobType(name="encode")
    assert await get(types, "encode") == JobType(name="encode")
    listed = await types.ListJobTypes(job_type_service_pb2.ListJobTypesRequest())
    assert [t.name for t in listed.job_types] == ["archive", "resize"]
    retry_cleared = await update(types, mask=["retry_policy"], name="resize")
    assert not retry_cleared.HasField("retry_policy")
    assert retry_cleared.max_attempts == 5


async def test_types_belong_to_their_tenant(types: TypeStub, jobs_stub: Stub) -> None:
    await update(types, tenant="acme", name="work", max_attempts=7)
    assert (await submit(jobs_stub, tenant="acme")).max_attempts == 7
    assert (await submit(jobs_stub, tenant="other")).max_attempts == 3
    listed = await types.ListJobTypes(
        job_type_service_pb2.ListJobTypesRequest(), metadata=as_tenant("other")
    )
    assert list(listed.job_types) == []


BAD_UPDATES: list[Any] = [
    pytest.param({"max_attempts": 0}, None, "job_type.max_attempts", id="attempts-zero"),
    pytest.param({"max_attempts": 101}, None, "job_type.max_attempts", id="attempts-101"),
    pytest.param({"timeout": seconds(0)}, ["timeout"], "job_type.timeout", id="timeout-zero"),
    pytest.param({"timeout": seconds(-1)}, None, "job_type.timeout", id="timeout-negative"),
    pytest.param(
        {"timeout": seconds(8 * 86_400)}, None, "job_type.timeout", id="timeout-eight-days"
    ),
    pytest.param(
        {"timeout": Duration(seconds=1, nanos=2_000_000_000)},
        None,
        "job_type.timeout",
        id="timeout-bad-nanos",
    ),
    pytest.param(
        {"retry_policy": Policy(jitter=2)}, None, "job_type.retry_policy.jitter", id="jitter"
    ),
    pytest.param(
        {"retry_policy": Policy(backoff_multiplier=0.5)},
        None,
        "job_type.retry_policy.backoff_multiplier",
        id="multiplier",
    ),
    pytest.param(
        {"retry_policy": Policy(initial_backoff=seconds(0))},
        ["retry_policy.initial_backoff"],
        "job_type.retry_policy.initial_backoff",
        id="initial-zero",
    ),
    pytest.param(
        {"retry_policy": Policy(initial_backoff=seconds(20), max_backoff=seconds(5))},
        None,
        "job_type.retry_policy.max_backoff",
        id="max-below-initial",
    ),
    pytest.param({"name": "9lives"}, None, "job_type.name", id="name-pattern"),
    pytest.param({"name": ""}, None, "job_type.name", id="name-missing"),
    pytest.param({"name": "a\x00b"}, None, "job_type.name", id="name-nul"),
    pytest.param({}, ["paused"], "update_mask.paths[0]", id="unknown-path"),
]


@pytest.mark.parametrize(("fields", "mask", "field"), BAD_UPDATES)
async def test_bad_updates_name_the_field_and_write_nothing(
    types: TypeStub, db: Database, fields: dict[str, Any], mask: list[str] | None, field: str
) -> None:
    before = await update(types, name="resize", max_attempts=4, timeout=seconds(30))
    fields = {"name": "resize", **fields}
    request = job_type_service_pb2.UpdateJobTypeRequest(job_type=JobType(**fields))
    if mask is not None:
        request.update_mask.CopyFrom(FieldMask(paths=mask))
    assert field in await invalid(types.UpdateJobType(request))
    assert await get(types, "resize") == before
    async with db.read() as conn:
        rows = (await conn.execute(text("SELECT name FROM job_types"))).scalars().all()
    assert rows == ["resize"]


async def test_bad_reads_name_the_field(types: TypeStub) -> None:
    assert await invalid(types.GetJobType(job_type_service_pb2.GetJobTypeRequest(name="-x"))) == [
        "name"
    ]
    assert await invalid(
        types.ListJobTypes(job_type_service_pb2.ListJobTypesRequest(page_size=-1))
    ) == ["page_size"]
    assert await invalid(
        types.ListJobTypes(job_type_service_pb2.ListJobTypesRequest(page_token="garbage"))
    ) == ["page_token"]


async def test_precedence_job_over_type_over_queue_over_default(
    jobs_stub: Stub, types: TypeStub, queues: QueueStub
) -> None:
    """Every setting at every level, with a value of its own per level."""
    await queues.UpdateQueue(
        queue_service_pb2.UpdateQueueRequest(
            queue=queue_service_pb2.Queue(
                name="full",
                default_max_attempts=4,
                default_timeout=seconds(40),
                default_retry_policy=Policy(
                    initial_backoff=seconds(4),
                    backoff_multiplier=4,
                    max_backoff=seconds(400),
                    jitter=0.4,
                ),
            )
        )
    )
    await update(
        types,
        name="typed",
        max_attempts=6,
        timeout=seconds(60),
        retry_policy=Policy(
            initial_backoff=seconds(6), backoff_multiplier=6, max_backoff=seconds(600), jitter=0.6
        ),
    )
    own = Policy(
        initial_backoff=seconds(8), backoff_multiplier=8, max_backoff=seconds(800), jitter=0.8
    )
    levels = {
        JOB: await submit(
            jobs_stub,
            type="typed",
            queue="full",
            max_attempts=8,
            timeout=seconds(80),
            retry_policy=own,
        ),
        TYPE: await submit(jobs_stub, type="typed", queue="full"),
        QUEUE: await submit(jobs_stub, type="plain", queue="full"),
        DEFAULT: await submit(jobs_stub, type="plain", queue="bare"),
    }
    expected = {
        JOB: (8, seconds(80), own),
        TYPE: (
            6,
            seconds(60),
            Policy(
                initial_backoff=seconds(6),
                backoff_multiplier=6,
                max_backoff=seconds(600),
                jitter=0.6,
            ),
        ),
        QUEUE: (
            4,
            seconds(40),
            Policy(
                initial_backoff=seconds(4),
                backoff_multiplier=4,
                max_backoff=seconds(400),
                jitter=0.4,
            ),
        ),
        DEFAULT: (
            3,
            None,
            Policy(
                initial_backoff=seconds(1),
                backoff_multiplier=2,
                max_backoff=seconds(600),
                jitter=0.1,
            ),
        ),
    }
    for source, submitted in levels.items():
        attempts, timeout, policy = expected[source]
        for job in (submitted, await state_of(jobs_stub, submitted.id)):
            assert job.max_attempts == attempts
            assert job.HasField("timeout") == (timeout is not None)
            if timeout is not None:
                assert job.timeout == timeout
            assert job.retry_policy == policy
            assert origins(job) == dict.fromkeys(SETTINGS, source)


async def test_each_setting_is_resolved_on_its_own(
    jobs_stub: Stub, types: TypeStub, queues: QueueStub
) -> None:
    await queues.UpdateQueue(
        queue_service_pb2.UpdateQueueRequest(
            queue=queue_service_pb2.Queue(
                name="mail",
                default_max_attempts=4,
                default_timeout=seconds(40),
                default_retry_policy=Policy(backoff_multiplier=4),
            )
        )
    )
    await update(
        types, name="send", timeout=seconds(60), retry_policy=Policy(initial_backoff=seconds(6))
    )
    job = await submit(
        jobs_stub, type="send", queue="mail", retry_policy=Policy(jitter=0), max_attempts=None
    )
    assert job.max_attempts == 4
    assert job.timeout == seconds(60)
    assert job.retry_policy == Policy(
        initial_backoff=seconds(6), backoff_multiplier=4, max_backoff=seconds(600), jitter=0
    )
    assert origins(await state_of(jobs_stub, job.id)) == {
        "max_attempts": QUEUE,
        "timeout": TYPE,
        "retry_policy.initial_backoff": TYPE,
        "retry_policy.backoff_multiplier": QUEUE,
        "retry_policy.max_backoff": DEFAULT,
        "retry_policy.jitter": JOB,
    }
    # A type's max_backoff below the job's initial backoff is raised to it.
    await update(types, name="tiny", retry_policy=Policy(max_backoff=seconds(2)))
    raised = await submit(jobs_stub, type="tiny", retry_policy=Policy(initial_backoff=seconds(5)))
    assert raised.retry_policy.max_backoff == seconds(5)


async def test_a_job_keeps_what_it_got_when_its_type_changes(
    jobs_stub: Stub, types: TypeStub
) -> None:
    await update(types, name="work", max_attempts=5, timeout=seconds(30))
    before = await submit(jobs_stub)
    await update(types, name="work", max_attempts=2, timeout=seconds(90))
    await update(types, mask=["timeout"], name="work")
    kept = await state_of(jobs_stub, before.id)
    assert kept.max_attempts == 5
    assert kept.timeout == seconds(30)
    assert origins(kept)["timeout"] == TYPE
    after = await submit(jobs_stub)
    assert after.max_attempts == 2
    assert not after.HasField("timeout")
    assert origins(after)["timeout"] == DEFAULT


async def test_the_types_timeout_reaches_the_executor(
    jobs_stub: Stub, types: TypeStub, channel: grpc.aio.Channel, executors: list[ScriptedExecutor]
) -> None:
    await update(types, name="work", timeout=seconds(45))
    job = await submit(jobs_stub)
    executor = await connect(channel, executors, "exec", 1)
    assignment = await executor.next("assignment")
    assert assignment.attempt.job_id == job.id
    assert assignment.timeout == seconds(45)


async def test_lists_and_batches_leave_the_origins_out(jobs_stub: Stub) -> None:
    """Six sub-messages per job are for GetJobStatus and SubmitJob only."""
    batch = await jobs_stub.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(jobs=[job_pb2.JobSpec(type="work")])
    )
    assert list(batch.jobs[0].setting_origins) == []
    active = await jobs_stub.ListActiveJobs(job_service_pb2.ListActiveJobsRequest())
    assert [list(j.setting_origins) for j in active.jobs] == [[]]
    assert origins(await state_of(jobs_stub, batch.jobs[0].id)) == dict.fromkeys(SETTINGS, DEFAULT)


async def test_reflection_lists_the_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="jobsched.v1.JobTypeService"),
    ]
    responses = [r async for r in stub.ServerReflectionInfo(iter(requests))]
    services = {s.name for s in responses[0].list_services_response.service}
    assert "jobsched.v1.JobTypeService" in services
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in responses[1].file_descriptor_response.file_descriptor_proto
    ]
    [service] = next(f for f in files if f.name == "jobsched/v1/job_type_service.proto").service
    assert {m.name for m in service.method} == {"GetJobType", "ListJobTypes", "UpdateJobType"}
