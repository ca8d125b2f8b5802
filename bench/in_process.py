"""An executor inside the benchmark process (`executor.runner.Executor`), with handlers that
report what the benchmark times: when a handler starts, and progress stamped with the time it was
reported. Its clock is the benchmark's own, so no clock skew enters the latencies."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from executor.handlers import HandlerRegistry, JobContext
from executor.runner import Executor
from jobsched.tracing import Tracing

START_TYPE = "bench.start"
PROGRESS_TYPE = "bench.progress"
HOLD_TYPE = "bench.hold"
STOP_GRACE = 5.0
EXECUTOR_LOGGER = "jobsched.executor"
REJECTED = "executor.result_rejected"


class StartRecorder:
    """The `bench.start` handler: notes time.time() when a job first starts, by job id, and
    counts the starts of a job that had started already (a reverted assignment run again)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.restarts = 0
        self.changed = asyncio.Event()

    async def handler(self, ctx: JobContext) -> None:
        if ctx.job_id in self.started:
            self.restarts += 1
        else:
            self.started[ctx.job_id] = time.time()
        self.changed.set()

    async def wait_for(self, job_ids: set[str]) -> None:
        while not job_ids <= self.started.keys():
            self.changed.clear()
            await self.changed.wait()


class Holder:
    """The `bench.hold` handler: runs until `release` is set (a long job that reports nothing)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.changed = asyncio.Event()

    async def handler(self, ctx: JobContext) -> None:
        self.running += 1
        self.changed.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1

    async def wait_running(self, count: int) -> None:
        while self.running < count:
            self.changed.clear()
            await self.changed.wait()


class ProgressReporter:
    """The `bench.progress` handler: reports progress every `interval` seconds, its message the
    time.time() of the report, until `stop` is set."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.stop = asyncio.Event()
        self.running = asyncio.Event()
        self.reports = 0

    async def handler(self, ctx: JobContext) -> None:
        self.running.set()
        percent = 0.0
        while not self.stop.is_set() and not ctx.cancelled.is_set():
            percent = (percent + 0.1) % 100
            ctx.progress(percent, step="bench", message=repr(time.time()))
            self.reports += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.interval)


class ExecutorEvents(logging.Handler):
    """Counts the executor's log events ("executor.result_rejected", ...) instead of printing
    its warnings in the middle of the benchmark's output."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        event = fields.get("event") if isinstance(fields, dict) else None
        self.counts[str(event or record.getMessage())] += 1


@contextlib.asynccontextmanager
async def running_executor(
    address: str,
    registry: HandlerRegistry,
    *,
    name: str,
    capacity: int,
    tracing: Tracing | None = None,
) -> AsyncIterator[ExecutorEvents]:
    """An in-process executor connected to `address`; yields the counts of its log events."""
    logger = logging.getLogger(EXECUTOR_LOGGER)
    events = ExecutorEvents()
    logger.addHandler(events)
    logger.propagate = False
    executor = Executor([address], name=name, capacity=capacity, registry=registry, tracing=tracing)
    await executor.start()
    try:
        async with asyncio.timeout(30):
            await executor.wait_registered()
        yield events
    finally:
        await executor.stop(grace=STOP_GRACE)
        logger.removeHandler(events)
        logger.propagate = True
