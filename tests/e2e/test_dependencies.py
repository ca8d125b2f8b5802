"""Job dependencies over real gRPC with real executors: DAGs run in dependency order, a failed
dependency cancels its dependents, bad input is INVALID_ARGUMENT and writes nothing, and a
10,000-job DAG runs to completion."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from executor.handlers import JobContext, NonRetryableError, builtin_registry
from executor.runner import Executor
from jobsched import cli
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.helpers import assert_eventually

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub

S = job_pb2  # JOB_STATE_* constants


async def fail(ctx: JobContext) -> bytes:
    raise NonRetryableError("this job always fails")


async def start_executors(scheduler: SchedulerServer, count: int, capacity: int) -> list[Executor]:
    executors = [
        Executor(
            [scheduler.address],
            name=f"exec-{i}",
            capacity=capacity,
            registry=builtin_registry([("fail", fail)]),
        )
        for i in range(count)
    ]
    for executor in executors:
        await executor.start()
        await executor.wait_registered()
    return executors


@pytest.fixture
async def running_executors(scheduler: SchedulerServer) -> AsyncIterator[list[Executor]]:
    started = await start_executors(scheduler, 2, 8)
    yield started
    for executor in started:
        await executor.stop(grace=1.0)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> Stub:
    return job_service_pb2_grpc.JobServiceStub(channel)


def spec(job_type: str = "noop", **fields: Any) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(type=job_type, **fields)


async def submit_batch(stub: Stub, *specs: job_pb2.JobSpec, tenant: str = "default") -> list[str]:
    response = await stub.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(jobs=list(specs)),
        metadata=(("x-jobsched-tenant", tenant),),
    )
    return [job.id for job in response.jobs]


async def status(stub: Stub, job_id: str) -> job_service_pb2.GetJobStatusResponse:
    return await stub.GetJobStatus(
        job_service_pb2.GetJobStatusRequest(id=job_id, include_events=True)
    )


async def wait_states(
    stub: Stub, expected: dict[str, job_pb2.JobState.ValueType], within: float = 20
) -> None:
    async def reached() -> None:
        for job_id, state in expected.items():
            job = (await status(stub, job_id)).job
            assert job.state == state, f"{job_id}: {S.JobState.Name(job.state)}"

    await assert_eventually(reached, within=within)


async def invalid_fields(call: Awaitable[Any]) -> list[str]:
    """Await an RPC that must be INVALID_ARGUMENT; the fields its BadRequest names."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    status_ = rpc_status.from_call(raised.value)
    assert status_ is not None
    fields: list[str] = []
    for detail in status_.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


async def rows(db: Database) -> tuple[int, int, int]:
    async with db.read() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_events), "
                    "(SELECT count(*) FROM job_dependencies)"
                )
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def edges_out_of_order(db: Database) -> int:
    """Edges whose dependent started before its dependency finished (must be none)."""
    async with db.read() as conn:
        return int(
            await conn.scalar(
                text(
                    "SELECT count(*) FROM job_dependencies d "
                    "JOIN jobs j ON j.id = d.job_id JOIN jobs dep ON dep.id = d.depends_on "
                    "WHERE j.started_at IS NULL OR dep.finished_at IS NULL "
                    "   OR j.started_at < dep.finished_at"
                )
            )
        )


# --- DAGs run in order ------------------------------------------------------------------------


async def test_a_chain_runs_in_order(
    running_executors: list[Executor], stub: Stub, db: Database
) -> None:
    first, second, third = await submit_batch(
        stub,
        spec("sleep", ref="first", payload=b'{"seconds": 0.5}'),
        spec(ref="second", depends_on_refs=["first"]),
        spec(ref="third", depends_on_refs=["second"]),
    )
    waiting = await status(stub, third)
    assert waiting.job.state == S.JOB_STATE_WAITING
    assert waiting.job.pending_dependencies == 1
    assert list(waiting.job.depends_on) == [second]
    assert [(d.id, d.state) for d in waiting.dependencies] == [(second, S.JOB_STATE_WAITING)]
    assert waiting.job.waiting_reason == S.WAITING_REASON_DEPENDENCIES

    await wait_states(stub, {job: S.JOB_STATE_SUCCEEDED for job in (first, second, third)})
    assert await edges_out_of_order(db) == 0
    done = await status(stub, third)
    assert done.job.pending_dependencies == 0
    assert [(d.id, d.state) for d in done.dependencies] == [(second, S.JOB_STATE_SUCCEEDED)]
    assert [(e.from_state, e.to_state) for e in done.events][:2] == [
        (S.JOB_STATE_UNSPECIFIED, S.JOB_STATE_WAITING),
        (S.JOB_STATE_WAITING, S.JOB_STATE_QUEUED),
    ]


async def test_a_job_submitted_alone_waits_for_stored_ids(
    running_executors: list[Executor], stub: Stub, db: Database
) -> None:
    [slow] = await submit_batch(stub, spec("sleep", payload=b'{"seconds": 0.5}'))
    [done] = await submit_batch(stub, spec())
    await wait_states(stub, {done: S.JOB_STATE_SUCCEEDED})
    response = await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=spec(depends_on=[slow, done]))
    )
    job = response.job
    assert job.state == S.JOB_STATE_WAITING
    assert job.pending_dependencies == 1  # `done` succeeded already: met
    assert set(job.depends_on) == {slow, done}
    await wait_states(stub, {job.id: S.JOB_STATE_SUCCEEDED})
    assert await edges_out_of_order(db) == 0


async def test_a_diamond_runs_the_bottom_after_both_sides(
    running_executors: list[Executor], stub: Stub, db: Database
) -> None:
    top, left, right, bottom = await submit_batch(
        stub,
        spec(ref="top"),
        spec("sleep", ref="left", depends_on_refs=["top"], payload=b'{"seconds": 0.2}'),
        spec("sleep", ref="right", depends_on_refs=["top"], payload=b'{"seconds": 0.6}'),
        spec(depends_on_refs=["left", "right"]),
    )
    await wait_states(stub, {left: S.JOB_STATE_SUCCEEDED})
    half = await status(stub, bottom)
    assert half.job.state == S.JOB_STATE_WAITING
    assert half.job.pending_dependencies == 1
    await wait_states(stub, {job: S.JOB_STATE_SUCCEEDED for job in (top, left, right, bottom)})
    assert await edges_out_of_order(db) == 0
    assert {d.id for d in (await status(stub, bottom)).dependencies} == {left, right}


async def test_a_failing_dependency_cancels_its_dependents_with_the_reason(
    running_executors: list[Executor], stub: Stub, db: Database
) -> None:
    failing, child, grandchild, bystander = await submit_batch(
        stub,
        spec("fail", ref="failing"),
        spec(ref="child", depends_on_refs=["failing"]),
        spec(depends_on_refs=["child"]),
        spec(),
    )
    await wait_states(
        stub,
        {
            failing: S.JOB_STATE_DEAD,
            child: S.JOB_STATE_CANCELLED,
            grandchild: S.JOB_STATE_CANCELLED,
            bystander: S.JOB_STATE_SUCCEEDED,
        },
    )
    cancelled = await status(stub, child)
    last = cancelled.events[-1]
    assert last.to_state == S.JOB_STATE_CANCELLED
    assert last.reason == f"dependency {failing} ended DEAD"
    assert last.actor == "scheduler"
    assert cancelled.job.attempt == 0  # never ran
    assert [(d.id, d.state) for d in cancelled.dependencies] == [(failing, S.JOB_STATE_DEAD)]
    assert (await status(stub, grandchild)).events[-1].reason == (
        f"upstream dependency {failing} ended DEAD"
    )

    # The dependency is DEAD now: a new job depending on it is refused.
    before = await rows(db)
    fields = await invalid_fields(
        stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec(depends_on=[bystander, failing])))
    )
    assert fields == ["job.depends_on[1]"]
    assert await rows(db) == before


async def test_a_cancelled_dependency_cancels_its_dependents(stub: Stub) -> None:
    parent, child = await submit_batch(
        stub, spec(ref="p"), spec(depends_on_refs=["p"])
    )  # no executor: the parent stays QUEUED
    await stub.CancelJob(job_service_pb2.CancelJobRequest(id=parent, reason="changed my mind"))
    response = await status(stub, child)
    assert response.job.state == S.JOB_STATE_CANCELLED
    assert response.events[-1].reason == f"dependency {parent} ended CANCELLED"


async def test_deleting_a_job_others_wait_for_is_refused(stub: Stub) -> None:
    parent, child = await submit_batch(stub, spec(ref="p"), spec(depends_on_refs=["p"]))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.DeleteJob(job_service_pb2.DeleteJobRequest(id=parent))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert child in (raised.value.details() or "")
    assert (await status(stub, parent)).job.state == S.JOB_STATE_QUEUED
    await stub.DeleteJob(job_service_pb2.DeleteJobRequest(id=child))
    await stub.DeleteJob(job_service_pb2.DeleteJobRequest(id=parent))


# --- bad input --------------------------------------------------------------------------------


async def test_bad_dependencies_are_invalid_argument_and_write_nothing(
    stub: Stub, db: Database
) -> None:
    [mine] = await submit_batch(stub, spec())
    [theirs] = await submit_batch(stub, spec(), tenant="other")
    before = await rows(db)
    unknown = str(uuid.uuid4())

    assert await invalid_fields(
        stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec(depends_on=[mine, unknown])))
    ) == ["job.depends_on[1]"]
    # Another tenant's job does not exist for this one.
    assert await invalid_fields(
        stub.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(
                jobs=[spec(), spec(depends_on=[theirs]), spec(depends_on=[mine])]
            )
        )
    ) == ["jobs[1].depends_on[0]"]
    assert await invalid_fields(
        stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec(depends_on=["nope"])))
    ) == ["job.depends_on[0]"]
    # A cycle, a repeated ref, an unknown ref.
    cycle = [
        spec(ref="a", depends_on_refs=["c"]),
        spec(ref="b", depends_on_refs=["a"]),
        spec(ref="c", depends_on_refs=["b"]),
        spec(),
    ]
    assert await invalid_fields(stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(jobs=cycle))) == [
        "jobs[1].depends_on_refs[0]"
    ]
    assert await invalid_fields(
        stub.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(jobs=[spec(ref="x"), spec(), spec(ref="x")])
        )
    ) == ["jobs[2].ref"]
    assert await invalid_fields(
        stub.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(
                jobs=[spec(ref="x"), spec(), spec(), spec(depends_on_refs=["x", "y"])]
            )
        )
    ) == ["jobs[3].depends_on_refs[1]"]
    # The other tenant sees the same: its own job is fine, mine is unknown.
    assert await invalid_fields(
        stub.SubmitJob(
            job_service_pb2.SubmitJobRequest(job=spec(depends_on=[theirs, mine])),
            metadata=(("x-jobsched-tenant", "other"),),
        )
    ) == ["job.depends_on[1]"]
    assert await rows(db) == before


# --- a 10,000-job DAG -------------------------------------------------------------------------

LAYERS, WIDTH, FAN_IN = 100, 100, 3


def layered_dag() -> list[list[tuple[int, ...]]]:
    """dag[layer][i]: the indexes in the previous layer that job (layer, i) depends on."""
    return [
        [()] * WIDTH
        if layer == 0
        else [tuple(sorted({(i + k * 37) % WIDTH for k in range(FAN_IN)})) for i in range(WIDTH)]
        for layer in range(LAYERS)
    ]


async def test_a_10000_job_dag_runs_to_completion(
    scheduler: SchedulerServer, stub: Stub, db: Database
) -> None:
    dag = layered_dag()
    half = LAYERS // 2
    started = time.monotonic()
    executors = await start_executors(scheduler, 4, 50)
    try:
        # Two SubmitJobs calls of 5,000: refs inside each, the second naming the first's ids.
        first = await submit_batch(
            stub,
            *[
                spec(ref=f"{layer}.{i}", depends_on_refs=[f"{layer - 1}.{d}" for d in deps])
                for layer in range(half)
                for i, deps in enumerate(dag[layer])
            ],
        )
        ids = {
            f"{layer}.{i}": first[layer * WIDTH + i] for layer in range(half) for i in range(WIDTH)
        }
        second = await submit_batch(
            stub,
            *[
                spec(
                    ref=f"{layer}.{i}",
                    depends_on_refs=[f"{layer - 1}.{d}" for d in deps] if layer > half else [],
                    depends_on=[ids[f"{layer - 1}.{d}"] for d in deps] if layer == half else [],
                )
                for layer in range(half, LAYERS)
                for i, deps in enumerate(dag[layer])
            ],
        )
        submitted = time.monotonic() - started
        assert len(first) + len(second) == LAYERS * WIDTH

        async def all_succeeded() -> None:
            async with db.read() as conn:
                done = await conn.scalar(
                    text("SELECT count(*) FROM jobs WHERE state = 'succeeded'")
                )
            assert done == LAYERS * WIDTH

        await assert_eventually(all_succeeded, within=50, interval=0.2)
        elapsed = time.monotonic() - started
    finally:
        for executor in executors:
            await executor.stop(grace=1.0)
    print(f"\n10,000-job DAG: submitted in {submitted:.2f} s, all succeeded after {elapsed:.2f} s")
    assert await edges_out_of_order(db) == 0
    async with db.read() as conn:
        runs = await conn.scalar(text("SELECT count(*) FROM job_events WHERE to_state = 'running'"))
        edges = await conn.scalar(text("SELECT count(*) FROM job_dependencies"))
    assert runs == LAYERS * WIDTH  # each job ran once
    assert edges == sum(len(deps) for layer in dag for deps in layer)


# --- CLI --------------------------------------------------------------------------------------


async def test_cli_submit_after_and_status_show_dependencies(
    scheduler: SchedulerServer, stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    [first, second] = await submit_batch(stub, spec(), spec())  # no executor: they stay QUEUED

    def jobsched(*args: str) -> tuple[int, str]:
        code = cli.main(["--address", scheduler.address, *args])
        return code, capsys.readouterr().out

    code, out = await asyncio.to_thread(
        jobsched, "submit", "--type", "noop", "--after", first, "--after", second, "--json"
    )
    assert code == 0
    child = json.loads(out)
    assert child["state"] == "JOB_STATE_WAITING"
    assert set(child["depends_on"]) == {first, second}
    assert child["pending_dependencies"] == 2

    code, out = await asyncio.to_thread(jobsched, "status", child["id"])
    assert code == 0
    assert "depends on (2 of 2 not succeeded yet)" in out
    assert first in out
    assert second in out
    assert "queued" in out

    code, _ = await asyncio.to_thread(
        jobsched, "submit", "--type", "noop", "--after", str(uuid.uuid4())
    )
    assert code == 2  # INVALID_ARGUMENT
