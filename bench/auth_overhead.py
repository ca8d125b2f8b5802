"""10. Authentication overhead: GetJobStatus and SubmitJob latency, one call at a time from one
client, against schedulers on one database, measured in alternating rounds so that the
machine's drift falls on all alike:

- `none`: `--auth off`, plaintext;
- `API key` and `JWT`: one `--auth required` scheduler, plaintext, with the bootstrap key
  (JOBSCHED_BOOTSTRAP_KEY) and with a JWT signed by a key of its JWKS file;
- `none (mTLS)`: `--auth off` over mutual TLS, the transport of the next;
- `mTLS identity`: `--auth required` over mutual TLS, the client certificate (no bearer)
  mapped to an admin by an identity rule.

The difference of the medians is what authenticating a call costs: API key and JWT against
`none`, the certificate's identity against `none (mTLS)` (TLS itself is not authentication).
Verified credentials are cached (keys 5 s, tokens until their exp, certificates by their
PEM), so this is the cached path, which is what a client making many calls sees.

PauseQueue is a mutating call: it writes one audit event (scheduler/auth/audit_writer.py) before
it answers, with authentication off or on, so its figures are the cost of an audited change.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc

from bench.auth_credentials import BenchCredentials
from bench.auth_path import measure_auth_path
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


async def _require_credentials(channel: grpc.aio.Channel, metadata: Metadata) -> None:
    """The comparison means nothing unless the scheduler really refuses a call without a
    credential."""
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
    with tempfile.TemporaryDirectory(prefix="jobsched-bench-auth-") as tmp:
        made = BenchCredentials.make(Path(tmp))
        async with (
            running_scheduler(database_url, name="auth-off") as off,
            running_scheduler(
                database_url,
                name="auth-required",
                extra_args=["--auth", "required", *made.jwt_args()],
                env={"JOBSCHED_BOOTSTRAP_KEY": key},
            ) as required,
            running_scheduler(
                database_url, name="mtls-auth-off", extra_args=made.mtls_server_args()
            ) as mtls_off,
            running_scheduler(
                database_url,
                name="mtls-auth-required",
                extra_args=[
                    "--auth",
                    "required",
                    *made.mtls_server_args(),
                    "--mtls-identities",
                    str(made.identities),
                ],
            ) as mtls_required,
            grpc.aio.insecure_channel(off.address) as off_channel,
            grpc.aio.insecure_channel(required.address) as required_channel,
            made.channel(mtls_off.address) as mtls_off_channel,
            made.channel(mtls_required.address) as mtls_required_channel,
        ):
            tenant = (("x-jobsched-tenant", "default"),)
            setups: list[tuple[str, grpc.aio.Channel, Metadata]] = [
                ("none", off_channel, tenant),
                ("API key", required_channel, (*tenant, ("authorization", f"Bearer {key}"))),
                ("JWT", required_channel, (*tenant, ("authorization", f"Bearer {made.token}"))),
                ("none (mTLS)", mtls_off_channel, tenant),
                ("mTLS identity", mtls_required_channel, tenant),
            ]
            await _require_credentials(required_channel, tenant)
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
                await measure_auth_path(made, sizes.mode, figures, name)
    await clear_jobs(conn)
    return [
        "Authentication overhead: all schedulers run on the same database; `none` is --auth "
        "off with no authorization header, `API key` and `JWT` are one --auth required "
        "scheduler with the bootstrap key and with a JWT of its JWKS, `mTLS identity` is "
        "--auth required over mutual TLS with the client certificate mapped by a rule, to be "
        "compared with `none (mTLS)` (--auth off over mutual TLS). Every credential is cached "
        "after its first check; `authenticate()` is that check alone, in the benchmark's "
        "process (bench/auth_path.py). Target (issue 16): at most +0.3 ms p50. PauseQueue "
        "writes one audit event before it answers, under every setup"
    ]
