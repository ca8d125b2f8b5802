"""Metrics of a scheduler and of a real executor process (`python -m executor --metrics-listen`)
after a known workload: n jobs that succeed, m that fail once and then succeed, k that are dead
at once. Both /metrics endpoints are scraped and the counters and histogram counts asserted
exactly; then every metric the Grafana dashboard and the Prometheus alerts query is found in
those scrapes (deploy/grafana/jobsched.json, deploy/prometheus/alerts.yml)."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.faults.harness import Service, free_port
from tests.helpers import assert_eventually
from tests.metrics_scrape import Samples, names, scrape, value
from tests.observability import alert_metric_names, dashboard_metric_names
from tests.scripted import serving

N, M, K = 3, 2, 2
HANDLERS = textwrap.dedent("""
    import jobsched
    from executor.handlers import NonRetryableError

    @jobsched.handler("ok")
    async def ok(ctx):
        return None

    @jobsched.handler("flaky")
    async def flaky(ctx):
        if ctx.attempt == 1:
            raise RuntimeError("first attempts fail")

    @jobsched.handler("doomed")
    async def doomed(ctx):
        raise NonRetryableError("never works")
""")


@dataclass
class Scrapes:
    scheduler: Samples
    executor: Samples


@pytest.fixture
async def scheduler(db: Database) -> AsyncIterator[SchedulerServer]:
    async with serving(
        db,
        metrics_listen="127.0.0.1:0",
        queue_depth_interval=0.1,
        leader_tick=0.1,
        heartbeat_interval=0.5,
        reconnect_grace=timedelta(seconds=1),
    ) as server:
        yield server


async def run_workload(
    scheduler: SchedulerServer, services: list[Service], tmp_path: Path
) -> Scrapes:
    (tmp_path / "workload_handlers.py").write_text(HANDLERS)
    executor_metrics = f"127.0.0.1:{free_port()}"
    executor = Service(
        name="executor",
        argv=[
            "-m",
            "executor",
            "--scheduler",
            scheduler.address,
            "--name",
            "metered",
            "--capacity",
            "3",
            "--handlers",
            "workload_handlers",
            "--metrics-listen",
            executor_metrics,
        ],
        log=tmp_path / "executor.log",
        environment=os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
    )
    services.append(executor)
    await executor.start()
    quick = job_pb2.RetryPolicy(initial_backoff=Duration(nanos=50_000_000), jitter=0)
    async with JobschedClient(scheduler.address) as client:

        async def connected() -> None:
            samples = await scrape(scheduler.metrics_server.address)  # type: ignore[union-attr]
            assert value(samples, "jobsched_executors_connected") == 1

        await assert_eventually(connected, within=30)
        specs = [job_pb2.JobSpec(type="ok", queue="Fast") for _ in range(N)]
        specs += [
            job_pb2.JobSpec(type="flaky", max_attempts=3, retry_policy=quick) for _ in range(M)
        ]
        specs += [job_pb2.JobSpec(type="doomed", max_attempts=5) for _ in range(K)]
        jobs = [(await client.submit_job(spec)).job for spec in specs]

        async def finished() -> None:
            for job in jobs:
                got = await client.get(job.id)
                assert got.state in (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_DEAD), got

        await assert_eventually(finished, within=30)

    async def both_counted() -> Scrapes:
        assert scheduler.metrics_server is not None
        ours = await scrape(scheduler.metrics_server.address)
        theirs = await scrape(executor_metrics)
        done = "jobsched_jobs_finished_total"
        assert value(ours, done, queue="default", type="doomed", outcome="dead") == K
        assert value(ours, done, queue="default", type="flaky", outcome="succeeded") == M
        assert value(ours, done, queue="fast", type="ok", outcome="succeeded") == N
        handler = "jobsched_executor_handler_seconds_count"
        assert value(theirs, handler, type="doomed", outcome="failed_permanently") == K
        assert value(theirs, handler, type="flaky", outcome="succeeded") == M
        assert value(theirs, handler, type="ok", outcome="succeeded") == N
        assert value(theirs, "jobsched_executor_running_jobs") == 0
        return Scrapes(ours, theirs)

    return await assert_eventually(both_counted, within=20)


@pytest.mark.timeout(120)
async def test_scheduler_and_executor_count_a_known_workload_exactly(
    scheduler: SchedulerServer, services: list[Service], tmp_path: Path
) -> None:
    scrapes = await run_workload(scheduler, services, tmp_path)
    ours, theirs = scrapes.scheduler, scrapes.executor

    submitted = "jobsched_jobs_submitted_total"
    assert value(ours, submitted, queue="fast", type="ok") == N
    assert value(ours, submitted, queue="default", type="flaky") == M
    assert value(ours, submitted, queue="default", type="doomed") == K
    finished = {key: v for key, v in ours.items() if key[0] == "jobsched_jobs_finished_total"}
    assert (
        value(ours, "jobsched_jobs_finished_total", queue="default", type="flaky", outcome="failed")
        == M
    )
    assert sum(finished.values()) == N + 2 * M + K
    # One queue wait and one run time per attempt: flaky jobs ran twice.
    for histogram in ("jobsched_job_queue_wait_seconds", "jobsched_job_run_seconds"):
        assert value(ours, f"{histogram}_count", queue="fast", type="ok") == N, histogram
        assert value(ours, f"{histogram}_count", queue="default", type="flaky") == 2 * M
        assert value(ours, f"{histogram}_count", queue="default", type="doomed") == K
        total = sum(v for (name, _), v in ours.items() if name == f"{histogram}_count")
        assert total == N + 2 * M + K, histogram
    # Every transaction is named by the function that opened it; the submits are JobStore's.
    transactions = {
        dict(labels)["statement"]: v
        for (name, labels), v in ours.items()
        if name == "jobsched_db_transaction_seconds_count"
    }
    assert transactions.get("JobStore.submit") == N + M + K, sorted(transactions)
    assert "unknown" not in transactions
    # A momentary count (callers in the middle of getting a connection): there, not exact.
    assert value(ours, "jobsched_db_pool_connections", state="waiting") is not None
    assert value(ours, "jobsched_leader") == 1
    assert value(ours, "jobsched_watch_subscribers") == 0
    submit = "/jobsched.v1.JobService/SubmitJob"
    assert value(ours, "jobsched_grpc_server_handled_total", method=submit, code="OK") == 7
    assert value(ours, "jobsched_grpc_server_handling_seconds_count", method=submit, code="OK") == 7

    assignments = "jobsched_executor_assignments_total"
    assert value(theirs, assignments, type="ok") == N
    assert value(theirs, assignments, type="flaky") == 2 * M
    assert value(theirs, assignments, type="doomed") == K
    handler = "jobsched_executor_handler_seconds_count"
    assert value(theirs, handler, type="flaky", outcome="failed") == M
    handled = sum(v for (name, _), v in theirs.items() if name == handler)
    assert handled == N + 2 * M + K
    assert value(theirs, "jobsched_executor_capacity") == 3
    assert value(theirs, "jobsched_executor_connected") == 1
    assert value(theirs, "jobsched_executor_registrations_total") == 1
    assert value(theirs, "jobsched_executor_reconnects_total") == 0


@pytest.mark.timeout(120)
async def test_every_metric_of_the_dashboard_and_the_alerts_is_in_a_real_scrape(
    scheduler: SchedulerServer, services: list[Service], tmp_path: Path
) -> None:
    scrapes = await run_workload(scheduler, services, tmp_path)
    # The leader's queue gauges report the queues it has seen with active jobs: park one (no
    # executor runs its type), which the workload's jobs may have been too quick to be.
    async with JobschedClient(scheduler.address) as client:
        await client.submit_job(job_pb2.JobSpec(type="parked"))
    assert scheduler.metrics_server is not None

    async def sampled() -> Samples:
        samples = await scrape(scheduler.metrics_server.address)  # type: ignore[union-attr]
        assert value(samples, "jobsched_queue_jobs", queue="default", state="queued") == 1
        return samples

    ours = await assert_eventually(sampled, within=10)
    scraped = names(ours) | names(scrapes.scheduler) | names(scrapes.executor)
    used = dashboard_metric_names() | alert_metric_names()
    assert len(used) >= 15  # the parser found the expressions
    missing = sorted(used - scraped)
    assert not missing, f"queried but never exported: {missing}"
