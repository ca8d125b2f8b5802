"""11. Telemetry overhead: end-to-end throughput (1 scheduler + 1 executor process, as in 1) and
enqueue-to-start latency (as in 3) under each configuration of `CONFIGURATIONS`, alternated
within every repetition so that the machine's drift falls on all alike; each configuration's
medians are also given as a ratio to the first one's ("everything off").

A configuration is a name and how its processes start: scheduler and executor arguments and
environment variables (`Configuration`). Adding one (metrics on, metrics and tracing together)
is one more entry in the tuple.

Traced configurations export by OTLP/gRPC to a sink process (bench/otlp_sink.py: it decodes
nothing and counts the export calls), so the spans are really made, batched, serialised and
sent. Sampling is the scheduler's and executor's `parentbased_traceidratio`: the
submits come without a traceparent (as from a client that does not trace), so each SubmitJob(s)
server span is a root, sampled at the ratio, and its jobs' spans follow that decision. Throughput
submits in batches of 100 here (1's batches are 1,000), so that 10 % sampling covers about
10 % of the jobs rather than two or three batches of 20.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import grpc

from bench.commits import CommitCounter, autovacuum_paused
from bench.console import progress
from bench.dataset import clear_jobs
from bench.in_process import START_TYPE, StartRecorder, running_executor
from bench.latency import WARM_UP_JOBS, steady_submits
from bench.postgres import BenchDatabase
from bench.scheduler_process import ROOT, running_scheduler
from bench.settings import Sizes
from bench.stats import Figures, percentile
from bench.throughput import Setup, Topology, run_once
from executor.handlers import HandlerRegistry
from jobsched.tracing import TracingSettings
from jobsched.v1 import job_service_pb2_grpc

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub

START_TIMEOUT = 60.0
TOPOLOGY = Topology(1, 1)
SUBMIT_BATCH = 100
SINK = "{sink}"  # replaced by the sink's address in a configuration's environment


@dataclass(frozen=True, slots=True)
class Configuration:
    """One telemetry setting under test: what its scheduler and executor processes get."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    scheduler_args: Sequence[str] = ()
    executor_args: Sequence[str] = ()

    def environment(self, sink: str) -> dict[str, str]:
        return {k: v.replace(SINK, sink) for k, v in self.env.items()}


def traced(ratio: float) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{SINK}",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(ratio),
    }


# The first is the baseline the others are compared with.
METRICS_ON = ("--metrics-listen", "127.0.0.1:0")  # the Prometheus endpoint, never scraped here

CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration("everything off"),
    Configuration("metrics on", scheduler_args=METRICS_ON, executor_args=METRICS_ON),
    Configuration("tracing 100 %", traced(1.0)),
    Configuration("tracing 10 %", traced(0.1)),
    Configuration(
        "metrics on, tracing 10 %",
        traced(0.1),
        scheduler_args=METRICS_ON,
        executor_args=METRICS_ON,
    ),
)


@contextlib.asynccontextmanager
async def running_sink() -> AsyncIterator[tuple[Callable[[], int], str]]:
    """The OTLP sink process (bench/otlp_sink.py); yields a reader of its export count (known
    once it stopped: read it after the block) and its address."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.otlp_sink",
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    exports = [0]
    try:
        async with asyncio.timeout(30):
            first = (await process.stdout.readline()).decode().split()
        if first[:1] != ["listening"]:
            raise RuntimeError(f"the OTLP sink did not start: {first}")
        yield (lambda: exports[0]), first[1]
    finally:
        if process.returncode is None:
            process.terminate()
        rest = (await process.stdout.read()).decode().split()
        await process.wait()
        if rest[:1] == ["exports"]:
            exports[0] = int(rest[1])


async def _start_latency(database_url: str, env: dict[str, str], sizes: Sizes) -> dict[str, float]:
    """3's measurement under `env`: the scheduler process gets it, the in-process executor
    traces from it (TracingSettings.from_env)."""
    count = round(sizes.start_rate * sizes.start_seconds)
    recorder = StartRecorder()
    registry = HandlerRegistry({START_TYPE: recorder.handler})
    tracing = TracingSettings.from_env("bench-executor", environ=env).build()
    try:
        async with (
            running_scheduler(database_url, name="telemetry", env=env) as scheduler,
            grpc.aio.insecure_channel(scheduler.address) as channel,
            running_executor(
                scheduler.address,
                registry,
                name="bench-telemetry",
                capacity=sizes.executor_capacity,
                tracing=tracing,
            ),
        ):
            stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
            warm, _, _ = await steady_submits(stub, sizes.start_rate, WARM_UP_JOBS)
            async with asyncio.timeout(START_TIMEOUT):
                await recorder.wait_for(set(warm))
            responses, _achieved, _ = await steady_submits(stub, sizes.start_rate, count)
            async with asyncio.timeout(START_TIMEOUT):
                await recorder.wait_for(set(responses))
    finally:
        if tracing is not None:
            tracing.shutdown()
    total = [(recorder.started[j] - t) * 1000 for j, t in responses.items()]
    return {"p50": percentile(total, 50), "p99": percentile(total, 99)}


def _name(configuration: Configuration, sizes: Sizes) -> str:
    return (
        f"Telemetry {configuration.name}: {sizes.throughput_jobs:,} no-op jobs, 1 scheduler + "
        f"1 executor (capacity {sizes.executor_capacity}); start latency at "
        f"{sizes.start_rate:.0f} jobs/s"
    )


async def measure_telemetry_overhead(
    database: BenchDatabase, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> list[str]:
    counter = CommitCounter(conn)
    await counter.calibrate()
    medians: dict[tuple[str, str], list[float]] = {}
    failures: list[str] = []
    async with autovacuum_paused(conn):
        for repetition in range(1, sizes.repetitions + 1):
            for configuration in CONFIGURATIONS:
                name = _name(configuration, sizes)
                progress(f"{name} (run {repetition}/{sizes.repetitions})")
                # A sink of its own per run: its export count is this run's.
                async with running_sink() as (exports, address):
                    env = configuration.environment(address)
                    setup = Setup(
                        scheduler_args=configuration.scheduler_args,
                        executor_args=configuration.executor_args,
                        env=env,
                        submit_batch=SUBMIT_BATCH,
                    )
                    run = await run_once(database, counter, TOPOLOGY, sizes, setup=setup)
                    await clear_jobs(conn)
                    try:
                        latency = await _start_latency(database.url, env, sizes)
                    except* grpc.aio.AioRpcError as failed:
                        # On an overloaded machine the scheduler's store calls can time out
                        # (UNAVAILABLE): this run's latency is left out, and said so.
                        first = failed.exceptions[0]
                        detail = first.details() if isinstance(first, grpc.aio.AioRpcError) else ""
                        failures.append(f"{configuration.name}, run {repetition}: {detail}")
                        latency = {}
                    await clear_jobs(conn)
                values = {
                    "throughput, first claim to last result": ("jobs/s", run.jobs_per_second),
                    "CPU per job: scheduler process": ("ms", run.scheduler_ms),
                    "CPU per job: executor process": ("ms", run.executor_ms),
                }
                if latency:
                    values["start latency p50"] = ("ms", latency["p50"])
                    values["start latency p99"] = ("ms", latency["p99"])
                for figure, (unit, value) in values.items():
                    figures.add(name, figure, unit, value)
                    medians.setdefault((configuration.name, figure), []).append(value)
                figures.add(name, "OTLP export calls received", "calls", exports())
    baseline = CONFIGURATIONS[0].name
    for configuration in CONFIGURATIONS[1:]:
        name = _name(configuration, sizes)
        for figure in ("throughput, first claim to last result", "start latency p50"):
            if (baseline, figure) not in medians or (configuration.name, figure) not in medians:
                continue
            base = statistics.median(medians[(baseline, figure)])
            value = statistics.median(medians[(configuration.name, figure)])
            figures.add(name, f"{figure} / {baseline}", "%", 100 * value / base if base else 0)
    return [
        *(f"Telemetry overhead: a start-latency run failed and is left out: {f}" for f in failures),
        "Telemetry overhead: configurations alternated within each repetition; traced ones "
        "export OTLP/gRPC to a sink process (bench/otlp_sink.py); the latency measurement's "
        "executor is in the benchmark process and traces like the configuration's processes. "
        "Target (issue 17): at most 5 % throughput cost with metrics on and 10 % sampling",
    ]
