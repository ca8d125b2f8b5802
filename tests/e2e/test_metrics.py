"""The metrics port of a real scheduler (--metrics-listen): after a known workload through a
real executor the job counters are exact, RPCs are counted by method and code, the gauges say
who leads and what is connected, the leader samples the queue depth, and /healthz and /readyz
answer (/readyz 503 while the store is partitioned away)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from executor.handlers import JobContext, NonRetryableError, RetryableError, builtin_registry
from executor.runner import Executor
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests import metrics_scrape
from tests.fault_proxy import FaultProxy
from tests.helpers import assert_eventually
from tests.metrics_scrape import Samples, value
from tests.pg_upstream import through
from tests.scripted import serving

SUBMIT = "/jobsched.v1.JobService/SubmitJob"


def metrics_address(server: SchedulerServer) -> str:
    assert server.metrics_server is not None
    return server.metrics_server.address


async def fetch(server: SchedulerServer, path: str) -> tuple[int, str]:
    return await metrics_scrape.fetch(metrics_address(server), path)


async def scrape(server: SchedulerServer) -> Samples:
    return await metrics_scrape.scrape(metrics_address(server))


async def ok(ctx: JobContext) -> None:
    return None


async def flaky(ctx: JobContext) -> None:
    if ctx.attempt == 1:
        raise RetryableError("first attempts fail")


async def doomed(ctx: JobContext) -> None:
    raise NonRetryableError("never works")


@pytest.fixture
async def scheduler(db: Database) -> AsyncIterator[SchedulerServer]:
    async with serving(
        db,
        reconnect_grace=timedelta(seconds=1),
        metrics_listen="127.0.0.1:0",
        queue_depth_interval=0.1,
        leader_tick=0.1,
    ) as server:
        yield server


@pytest.fixture
async def executor(scheduler: SchedulerServer) -> AsyncIterator[Executor]:
    registry = builtin_registry([("ok", ok), ("flaky", flaky), ("doomed", doomed)])
    executor = Executor([scheduler.address], name="metrics-exec", capacity=3, registry=registry)
    await executor.start()
    await executor.wait_registered()
    yield executor
    await executor.stop(grace=1.0)


async def submit(stub: job_service_pb2_grpc.JobServiceAsyncStub, **spec: object) -> job_pb2.Job:
    request = job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(**spec))  # type: ignore[arg-type]
    return (await stub.SubmitJob(request)).job


async def test_counters_are_exact_after_a_known_workload(
    scheduler: SchedulerServer, executor: Executor
) -> None:
    n, m, k = 3, 2, 2
    quick = job_pb2.RetryPolicy(initial_backoff=Duration(nanos=50_000_000), jitter=0)
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        jobs = [await submit(stub, type="ok", queue="Fast") for _ in range(n)]
        jobs += [
            await submit(stub, type="flaky", max_attempts=3, retry_policy=quick) for _ in range(m)
        ]
        jobs += [await submit(stub, type="doomed", max_attempts=5) for _ in range(k)]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await submit(stub, type="bad type!")
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT

        async def all_finished() -> None:
            for job in jobs:
                got = await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job.id))
                assert got.job.state in (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_DEAD)

        await assert_eventually(all_finished, within=20)

    async def counted() -> Samples:
        samples = await scrape(scheduler)
        finished = "jobsched_jobs_finished_total"
        assert value(samples, finished, queue="fast", type="ok", outcome="succeeded") == n
        assert value(samples, finished, queue="default", type="flaky", outcome="failed") == m
        assert value(samples, finished, queue="default", type="flaky", outcome="succeeded") == m
        assert value(samples, finished, queue="default", type="doomed", outcome="dead") == k
        return samples

    samples = await assert_eventually(counted)
    finished = {key: v for key, v in samples.items() if key[0] == "jobsched_jobs_finished_total"}
    assert sum(finished.values()) == n + 2 * m + k  # nothing else counted (no cancelled, ...)
    submitted = "jobsched_jobs_submitted_total"
    assert value(samples, submitted, queue="fast", type="ok") == n
    assert value(samples, submitted, queue="default", type="flaky") == m
    assert value(samples, submitted, queue="default", type="doomed") == k
    assert sum(v for key, v in samples.items() if key[0] == submitted) == n + m + k

    handled = "jobsched_grpc_server_handled_total"
    assert value(samples, handled, method=SUBMIT, code="OK") == n + m + k
    assert value(samples, handled, method=SUBMIT, code="INVALID_ARGUMENT") == 1
    histogram = "jobsched_grpc_server_handling_seconds_count"
    assert value(samples, histogram, method=SUBMIT, code="OK") == n + m + k
    assert value(samples, "jobsched_executors_connected") == 1
    used = value(samples, "jobsched_executor_slots", state="used")
    free = value(samples, "jobsched_executor_slots", state="free")
    assert (used, free) == (0, 3)
    assert value(samples, "jobsched_db_pool_connections", state="in_use") is not None
    assert value(samples, "jobsched_db_pool_connections", state="idle") is not None


async def test_the_leader_reports_itself_and_the_queue_depth(
    scheduler: SchedulerServer, db: Database
) -> None:
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        for _ in range(2):
            await submit(stub, type="unhandled", queue="backlog")  # no executor: stays queued
        await submit(stub, type="unhandled", queue="backlog", run_at=far_future())

    async def sampled() -> Samples:
        samples = await scrape(scheduler)
        assert value(samples, "jobsched_leader") == 1
        assert value(samples, "jobsched_queue_jobs", queue="backlog", state="queued") == 2
        assert value(samples, "jobsched_queue_jobs", queue="backlog", state="scheduled") == 1
        assert value(samples, "jobsched_queue_jobs", queue="backlog", state="running") == 0
        # Why they wait: no executor runs their type; the third is not due yet.
        waiting = "jobsched_jobs_waiting"
        assert value(samples, waiting, queue="backlog", reason="no_executor_for_type") == 2
        assert value(samples, waiting, queue="backlog", reason="scheduled") == 1
        assert value(samples, waiting, queue="backlog", reason="queue_paused") == 0
        return samples

    samples = await assert_eventually(sampled, within=10)
    # The oldest due job has waited since its submit (the one for tomorrow is not due).
    oldest = value(samples, "jobsched_queue_oldest_wait_seconds", queue="backlog")
    assert oldest is not None
    assert 0 < oldest < 60
    epoch = value(samples, "jobsched_leader_epoch")
    assert epoch is not None
    assert epoch >= 1
    assert epoch == scheduler.leader.epoch

    # A follower (a second replica on the same database) says so and reports no queue depth.
    async with serving(db, metrics_listen="127.0.0.1:0", queue_depth_interval=0.1) as follower:
        samples = await scrape(follower)
        assert value(samples, "jobsched_leader") == 0
        assert value(samples, "jobsched_leader_epoch") is None
        leaders_only = (
            "jobsched_queue_jobs",
            "jobsched_jobs_waiting",
            "jobsched_queue_oldest_wait_seconds",
        )
        assert not [key for key in samples if key[0] in leaders_only]


def far_future() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    return stamp


async def test_health_endpoints_and_unknown_paths(scheduler: SchedulerServer) -> None:
    assert await fetch(scheduler, "/healthz") == (200, "ok\n")
    assert await fetch(scheduler, "/readyz") == (200, "ready\n")
    status, _ = await fetch(scheduler, "/nope")
    assert status == 404


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy.to_postgres(database_url)
    await proxy.start()
    yield proxy
    proxy.pass_through()
    await proxy.stop()


@pytest.mark.timeout(60)
async def test_readyz_fails_while_the_store_is_unreachable(
    database_url: str, proxy: FaultProxy
) -> None:
    proxied = Database.from_url(through(database_url, proxy.port), pool_size=2)
    try:
        async with serving(proxied, metrics_listen="127.0.0.1:0", health_interval=0.2) as server:
            assert (await fetch(server, "/readyz"))[0] == 200
            proxy.black_hole()

            async def unready() -> None:
                assert await fetch(server, "/readyz") == (503, "the job store is unreachable\n")

            await assert_eventually(unready, within=15)
            assert (await fetch(server, "/healthz"))[0] == 200  # alive all the same
            proxy.pass_through()

            async def ready() -> None:
                assert (await fetch(server, "/readyz"))[0] == 200

            await assert_eventually(ready, within=15)
    finally:
        await proxied.dispose()
