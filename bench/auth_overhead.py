"""10. Authentication overhead: GetJobStatus and SubmitJob latency, one call at a time from one
client, against a scheduler with `--auth off` and one with `--auth required` (an API key, from
JOBSCHED_BOOTSTRAP_KEY), both on the same database and measured in alternating rounds, so the
machine's drift falls on both alike. The difference of the medians is what authenticating a
call costs (the key's check is cached for 5 s, so this is the cached path).

PauseQueue is a mutating call: it writes one audit event (scheduler/auth/audit_writer.py) before
it answers, with authentication off or on, so its figures are the cost of an audited change.

JWT and mTLS identities are not built yet (issue 16); their rows come with them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

import asyncpg
import grpc

from bench.console import progress
from bench.dataset import clear_jobs
from bench.scheduler_process import running_scheduler
from bench.settings import Sizes
from bench.stats import Figures, percentile
from jobsched.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
)

CALLS = {"full": 2000, "quick": 300}
ROUNDS = 4
WARM_UP = 50

Metadata = tuple[tuple[str, str], ...]


async def _timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _round(
    channel: grpc.aio.Channel, metadata: Metadata, count: int
) -> dict[str, list[float]]:
    """`count` GetJobStatus of one job, count/4 SubmitJob and count/4 PauseQueue (audited),
    each call timed on its own."""
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    queues = queue_service_pb2_grpc.QueueServiceStub(channel)
    pause_request = queue_service_pb2.PauseQueueRequest(name="bench-audit")
    submit_request = job_service_pb2.SubmitJobRequest(
        job=job_pb2.JobSpec(type="bench.auth", queue="bench-auth")
    )
    job = (await stub.SubmitJob(submit_request, metadata=metadata)).job
    status_request = job_service_pb2.GetJobStatusRequest(id=job.id)

    def submit() -> Awaitable[object]:
        return stub.SubmitJob(submit_request, metadata=metadata)

    def status() -> Awaitable[object]:
        return stub.GetJobStatus(status_request, metadata=metadata)

    def pause() -> Awaitable[object]:
        return queues.PauseQueue(pause_request, metadata=metadata)

    await _timed(status, WARM_UP)
    return {
        "GetJobStatus": await _timed(status, count),
        "SubmitJob": await _timed(submit, count // 4),
        "PauseQueue": await _timed(pause, count // 4),
    }


async def _require_keys(channel: grpc.aio.Channel, metadata: Metadata) -> None:
    """The comparison means nothing unless the second scheduler really refuses a call without
    a key."""
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    try:
        await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id="x"), metadata=metadata)
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.UNAUTHENTICATED:
            return
        raise RuntimeError(f"expected UNAUTHENTICATED without a key, got {err.code()}") from err
    raise RuntimeError("the --auth required scheduler answered a call without a key")


async def measure_auth_overhead(
    database_url: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> list[str]:
    count = CALLS.get(sizes.mode, CALLS["quick"])
    name = (
        f"Authentication overhead: {count} sequential calls per round, {ROUNDS} rounds alternated"
    )
    await clear_jobs(conn)
    key = "jsk_" + secrets.token_urlsafe(32)
    async with (
        running_scheduler(database_url, name="auth-off") as off,
        running_scheduler(
            database_url,
            name="auth-required",
            extra_args=["--auth", "required"],
            env={"JOBSCHED_BOOTSTRAP_KEY": key},
        ) as required,
        grpc.aio.insecure_channel(off.address) as off_channel,
        grpc.aio.insecure_channel(required.address) as required_channel,
    ):
        tenant = (("x-jobsched-tenant", "default"),)
        setups: list[tuple[str, grpc.aio.Channel, Metadata]] = [
            ("none", off_channel, tenant),
            ("API key", required_channel, (*tenant, ("authorization", f"Bearer {key}"))),
        ]
        await _require_keys(required_channel, tenant)
        samples: dict[tuple[str, str], list[float]] = {}
        for repetition in range(1, sizes.repetitions + 1):
            progress(f"{name} (run {repetition}/{sizes.repetitions})")
            for _ in range(ROUNDS):
                for label, channel, metadata in setups:
                    for method, values in (await _round(channel, metadata, count)).items():
                        samples.setdefault((label, method), []).extend(values)
            for (label, method), values in samples.items():
                figures.add(name, f"{method} {label}: p50", "ms", percentile(values, 50))
                figures.add(name, f"{method} {label}: p99", "ms", percentile(values, 99))
            samples.clear()
    await clear_jobs(conn)
    return [
        "Authentication overhead: both schedulers run on the same database; `none` is --auth "
        "off with no authorization header, `API key` is --auth required with the bootstrap key "
        "(cached after its first check). Target (issue 16): at most +0.3 ms p50. PauseQueue "
        "writes one audit event before it answers, under both"
    ]
