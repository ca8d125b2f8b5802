"""4. Progress latency: from a handler's ctx.progress() call to a WatchJob subscriber receiving
that value, with one subscriber and with many (all watching the same running job, each on its
own connection).

The handler (in-process executor) reports every `Sizes.progress_report_interval` seconds with
the report's time.time() as the message; a subscriber takes receive time minus that stamp, for
every progress item it gets during a measured window. Values superseded before they were
delivered (the executor keeps the latest per 0.2 s, the scheduler writes the latest per 0.5 s)
are never received, so the share of reports delivered is given too.

The cross-replica case runs two scheduler replicas: the executor is connected to one, the
subscriber to the other, so each report reaches it through the `jobsched_progress` signal.

Each case subscribes once and then measures `Sizes.repetitions` consecutive windows (the runs):
opening a thousand WatchJob streams takes the scheduler most of a minute today. Subscribers
the scheduler refuses or drops are counted, not retried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import grpc

from bench import targets
from bench.console import progress
from bench.dataset import clear_jobs
from bench.in_process import PROGRESS_TYPE, ProgressReporter, running_executor
from bench.scheduler_process import SchedulerProcess, running_scheduler, running_schedulers
from bench.settings import Sizes
from bench.stats import Figures, Target, percentile
from executor.handlers import HandlerRegistry
from jobsched.v1 import (
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)

if TYPE_CHECKING:  # typing-only classes of the generated stubs
    from jobsched.v1.cluster_service_pb2_grpc import ClusterServiceAsyncStub
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub

SETUP_TIMEOUT = 30.0  # subscribers not subscribed by then are given up
END_TIMEOUT = 5.0
OPEN_CONCURRENCY = 50
PRESENCE_INTERVAL = 0.5  # of the cross-replica case: the replicas find each other fast
# One connection per subscriber: grpc would otherwise share one per target among channels.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@dataclass
class Window:
    """Samples are kept only while a window is open."""

    open: bool = False


@dataclass
class Subscriber:
    window: Window
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # snapshot received, or failed
    latencies_ms: list[float] = field(default_factory=list)
    error: str | None = None  # the status code that ended the stream early
    details: str = ""

    async def watch(self, address: str, job_id: str, admission: asyncio.Semaphore) -> None:
        try:
            async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
                stub = job_service_pb2_grpc.JobServiceStub(channel)
                async with admission:
                    call = stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id))
                    first = await call.read()
                    if not isinstance(first, job_service_pb2.WatchJobResponse):
                        raise RuntimeError("the stream ended before its snapshot")
                self.settled.set()
                while isinstance(item := await call.read(), job_service_pb2.WatchJobResponse):
                    if item.WhichOneof("item") == "progress" and self.window.open:
                        with contextlib.suppress(ValueError):
                            sent = float(item.progress.message)
                            self.latencies_ms.append((time.time() - sent) * 1000)
        except grpc.aio.AioRpcError as exc:
            if self.error is None:
                self.error, self.details = exc.code().name, exc.details() or ""
        finally:
            self.settled.set()


@dataclass(frozen=True, slots=True)
class WindowResult:
    latencies_ms: list[float]
    delivered_share: float  # received values per live subscriber / reports made in the window
    scheduler_cpu: float  # % of a core during the window
    # This process's (the subscribers', the in-process executor's): near 100 % of a core, the
    # figures measure the benchmark's own Python, not the scheduler.
    bench_cpu: float


class Subscription:
    """`count` subscribers of one running `bench.progress` job."""

    def __init__(
        self,
        scheduler: SchedulerProcess,
        stub: JobServiceAsyncStub,
        reporter: ProgressReporter,
        count: int,
        watch_at: SchedulerProcess | None = None,
    ) -> None:
        self.scheduler, self.stub, self.reporter = scheduler, stub, reporter
        # The replica the subscribers watch through (the one the executor reports to, unless
        # another is named); its CPU is the one measured.
        self.watch_at = watch_at or scheduler
        self.window = Window()
        self.subscribers = [Subscriber(self.window) for _ in range(count)]
        self.tasks: list[asyncio.Task[None]] = []
        self.setup_seconds = 0.0

    async def __aenter__(self) -> Subscription:
        reporter = self.reporter
        reporter.stop, reporter.running = asyncio.Event(), asyncio.Event()
        response = await self.stub.SubmitJob(
            job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type=PROGRESS_TYPE))
        )
        admission = asyncio.Semaphore(OPEN_CONCURRENCY)
        started = time.monotonic()
        self.tasks = [
            asyncio.create_task(s.watch(self.watch_at.address, response.job.id, admission))
            for s in self.subscribers
        ]
        async with asyncio.timeout(SETUP_TIMEOUT):
            await reporter.running.wait()
        settling = [asyncio.create_task(s.settled.wait()) for s in self.subscribers]
        await asyncio.wait(settling, timeout=max(0.0, SETUP_TIMEOUT - (time.monotonic() - started)))
        for subscriber, task, waiting in zip(self.subscribers, self.tasks, settling, strict=True):
            if not waiting.done():
                waiting.cancel()
                task.cancel()
                subscriber.error = f"not subscribed after {SETUP_TIMEOUT:.0f} s"
        self.setup_seconds = time.monotonic() - started
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.reporter.stop.set()  # the job succeeds; its terminal event ends the streams
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(END_TIMEOUT):
                await asyncio.gather(*self.tasks, return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def live(self) -> list[Subscriber]:
        return [s for s in self.subscribers if s.error is None]

    def errors(self) -> str:
        """What ended streams early: counts by status code, and one example's details."""
        failed = [s for s in self.subscribers if s.error is not None]
        if not failed:
            return ""
        counts = collections.Counter(s.error for s in failed)
        summary = ", ".join(f"{n} {code}" for code, n in counts.most_common())
        return f"{summary} (e.g. {failed[0].details[:160]!r})"

    async def measure(self, seconds: float) -> WindowResult:
        for subscriber in self.subscribers:
            subscriber.latencies_ms.clear()
        cpu_before, reports_before = self.watch_at.cpu_seconds(), self.reporter.reports
        own_before = time.process_time()
        self.window.open = True
        await asyncio.sleep(seconds)
        self.window.open = False
        cpu = self.watch_at.cpu_seconds() - cpu_before
        own = time.process_time() - own_before
        reports = self.reporter.reports - reports_before
        live = self.live()
        latencies = [ms for s in live for ms in s.latencies_ms]
        if not latencies:
            raise RuntimeError("no progress reached the subscribers in the window")
        return WindowResult(
            latencies_ms=latencies,
            delivered_share=len(latencies) / max(1, len(live)) / max(1, reports),
            scheduler_cpu=100 * cpu / seconds,
            bench_cpu=100 * own / seconds,
        )


async def measure_progress_latency(
    database_url: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> list[str]:
    """Returns notes: why subscribers failed, if any did."""
    notes = []
    await clear_jobs(conn)
    reporter = ProgressReporter(sizes.progress_report_interval)
    registry = HandlerRegistry({PROGRESS_TYPE: reporter.handler})
    cases: list[tuple[int, Target]] = [
        (1, targets.PROGRESS_P99_ONE_SUBSCRIBER_MS),
        (sizes.many_subscribers, targets.PROGRESS_P99_1000_SUBSCRIBERS_MS),
    ]
    async with (
        running_scheduler(database_url) as scheduler,
        grpc.aio.insecure_channel(scheduler.address) as channel,
        running_executor(scheduler.address, registry, name="bench-progress", capacity=1),
    ):
        stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
        for count, target in cases:
            name = (
                f"Progress latency: report every {sizes.progress_report_interval * 1000:.0f} ms "
                f"to {count:,} WatchJob subscriber{'s' if count > 1 else ''} of one job, "
                f"{sizes.progress_seconds:.0f} s windows"
            )
            progress(f"{name}: subscribing")
            async with Subscription(scheduler, stub, reporter, count) as subscription:
                if count > 1:
                    figures.add(name, "time to subscribe them", "s", subscription.setup_seconds)
                for repetition in range(1, sizes.repetitions + 1):
                    progress(f"{name} (window {repetition}/{sizes.repetitions})")
                    run = await subscription.measure(sizes.progress_seconds)
                    figures.add(name, "latency p50", "ms", percentile(run.latencies_ms, 50))
                    figures.add(name, "latency p99", "ms", percentile(run.latencies_ms, 99), target)
                    figures.add(name, "share of reports delivered", "%", 100 * run.delivered_share)
                    figures.add(
                        name, "scheduler CPU in the window", "% of a core", run.scheduler_cpu
                    )
                    figures.add(
                        name, "benchmark process CPU in the window", "% of a core", run.bench_cpu
                    )
                    if count > 1:
                        figures.add(name, "subscribers alive", "", len(subscription.live()))
                figures.add(name, "scheduler RSS", "MB", scheduler.rss_mb())
                errors = subscription.errors()
                if errors:
                    notes.append(f"{name}: streams that failed: {errors}")
    await _measure_cross_replica(database_url, sizes, figures, reporter, registry, notes)
    await clear_jobs(conn)
    return notes


async def _peers_known(stub: ClusterServiceAsyncStub, count: int) -> None:
    """Until every replica reported itself after all `count` were listed: each then counts the
    others as peers (and forwards its live progress)."""
    listed_at: dict[str, int] = {}
    async with asyncio.timeout(SETUP_TIMEOUT):
        while True:
            status = await stub.GetClusterStatus(cluster_service_pb2.GetClusterStatusRequest())
            seen = {r.id: r.last_seen_time.ToMicroseconds() for r in status.replicas}
            if len(seen) >= count:
                if not listed_at:
                    listed_at = seen
                elif all(seen.get(r, 0) > at for r, at in listed_at.items()):
                    return
            await asyncio.sleep(PRESENCE_INTERVAL / 5)


async def _measure_cross_replica(
    database_url: str,
    sizes: Sizes,
    figures: Figures,
    reporter: ProgressReporter,
    registry: HandlerRegistry,
    notes: list[str],
) -> None:
    name = (
        f"Progress latency across replicas: report every "
        f"{sizes.progress_report_interval * 1000:.0f} ms to replica 1, one WatchJob subscriber "
        f"on replica 2, {sizes.progress_seconds:.0f} s windows"
    )
    progress(f"{name}: starting two replicas")
    extra = ("--presence-interval", str(PRESENCE_INTERVAL))
    async with (
        running_schedulers(database_url, 2, extra_args=extra) as (near, far),
        grpc.aio.insecure_channel(near.address) as channel,
        running_executor(near.address, registry, name="bench-progress-near", capacity=1),
    ):
        cluster: ClusterServiceAsyncStub = cluster_service_pb2_grpc.ClusterServiceStub(channel)
        await _peers_known(cluster, 2)
        stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
        async with Subscription(near, stub, reporter, 1, watch_at=far) as subscription:
            for repetition in range(1, sizes.repetitions + 1):
                progress(f"{name} (window {repetition}/{sizes.repetitions})")
                run = await subscription.measure(sizes.progress_seconds)
                figures.add(name, "latency p50", "ms", percentile(run.latencies_ms, 50))
                figures.add(
                    name,
                    "latency p99",
                    "ms",
                    percentile(run.latencies_ms, 99),
                    targets.PROGRESS_P99_CROSS_REPLICA_MS,
                )
                figures.add(name, "share of reports delivered", "%", 100 * run.delivered_share)
            errors = subscription.errors()
            if errors:
                notes.append(f"{name}: streams that failed: {errors}")
