"""OTLP export of the metrics (OTEL_METRICS_EXPORTER=otlp, OTEL_EXPORTER_OTLP_ENDPOINT): a
scheduler without --metrics-listen and a real executor process both push to an in-test OTLP/gRPC
receiver, each under its own service.name, with the same counts as /metrics would show; a bad
exporter name is refused at start-up, naming the variable."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.faults.harness import Service
from tests.helpers import assert_eventually
from tests.otlp_receiver import MetricsReceiver, receiving
from tests.scripted import serving

INTERVAL_MS = "200"


@pytest.fixture
async def receiver() -> AsyncIterator[MetricsReceiver]:
    async with receiving() as receiver:
        yield receiver


def otlp_environment(receiver: MetricsReceiver) -> dict[str, str]:
    return {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": INTERVAL_MS,
    }


@pytest.mark.timeout(90)
async def test_scheduler_and_executor_push_their_metrics_by_otlp(
    db: Database,
    receiver: MetricsReceiver,
    services: list[Service],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, setting in otlp_environment(receiver).items():
        monkeypatch.setenv(name, setting)
    async with serving(db, heartbeat_interval=0.5) as scheduler:
        assert scheduler.metrics is not None  # on, without --metrics-listen
        assert scheduler.metrics_server is None
        executor = Service(
            name="executor",
            argv=["-m", "executor", "--scheduler", scheduler.address, "--name", "pushing"],
            log=tmp_path / "executor.log",
            environment=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
        )
        services.append(executor)
        await executor.start()
        await pushed_counts(scheduler, receiver)
        await executor.stop()

        async def final_export() -> None:
            registrations = receiver.value("jobsched-executor", "jobsched_executor_connected")
            assert registrations == 0  # its last export, sent while it stopped

        await assert_eventually(final_export, within=15)


async def pushed_counts(scheduler: SchedulerServer, receiver: MetricsReceiver) -> None:
    async with JobschedClient(scheduler.address) as client:
        jobs = [(await client.submit_job(job_pb2.JobSpec(type="noop"))).job for _ in range(3)]

        async def succeeded() -> None:
            for job in jobs:
                assert (await client.get(job.id)).state == job_pb2.JOB_STATE_SUCCEEDED

        await assert_eventually(succeeded, within=30)

    async def exported() -> None:
        ours = "jobsched-scheduler"
        labels = {"queue": "default", "type": "noop"}
        assert receiver.value(ours, "jobsched_jobs_submitted", **labels) == 3
        finished = receiver.value(ours, "jobsched_jobs_finished", outcome="succeeded", **labels)
        assert finished == 3
        assert receiver.value(ours, "jobsched_job_run_seconds", **labels) == 3
        assert receiver.value(ours, "jobsched_leader") == 1
        theirs = "jobsched-executor"
        assert receiver.value(theirs, "jobsched_executor_assignments", type="noop") == 3
        handled = receiver.value(
            theirs, "jobsched_executor_handler_seconds", type="noop", outcome="succeeded"
        )
        assert handled == 3
        assert receiver.value(theirs, "jobsched_executor_connected") == 1

    await assert_eventually(exported, within=20)


async def test_an_unknown_metrics_exporter_is_refused_naming_the_variable(
    tmp_path: Path, services: list[Service]
) -> None:
    executor = Service(
        name="executor",
        argv=["-m", "executor", "--scheduler", "127.0.0.1:1"],
        log=tmp_path / "executor.log",
        environment=os.environ
        | {"OTEL_METRICS_EXPORTER": "otlp,zipkin", "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    services.append(executor)
    await executor.start()
    assert executor.process is not None
    assert await executor.process.wait() == 2
    line = executor.log.read_text().strip()
    assert line == (
        "jobsched executor: OTEL_METRICS_EXPORTER: unknown exporter zipkin "
        "(known: console, none, otlp, prometheus)"
    )
