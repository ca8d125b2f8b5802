"""The executor service: holds a Connect stream to a scheduler and runs the jobs it is assigned.

Two event loops, so that handler code can never stall the stream:

- the handler loop is the caller's, the one `await executor.start()` ran on. Handlers run there
  as tasks (``async def``; plain functions in a thread pool of `capacity` threads started from
  there), so an application embedding the executor can share its loop's resources with them.
  Timeouts, the cancel grace and `ctx.cancelled` live there too (executor/runs.py);
- the stream loop runs on a thread of its own (executor/loop_thread.py): the gRPC channel, the
  reader, heartbeats, acks, progress and log reports and the results awaiting their ResultAck
  (executor/stream.py). A handler blocking the handler loop (``time.sleep`` in ``async def``)
  therefore does not stop the heartbeats that keep its lease; a watchdog on the stream thread
  logs a warning naming the job (executor/watchdog.py).

The loops talk only through posted calls (`Inbox.post`, batched: one wake-up carries every call
that arrived) and `LoopThread.run`: assignments cross to the handler loop a message at a time,
outcomes cross back an iteration's worth at a time, progress crosses once per report that finds
the previous one taken. JobContext's reporting is thread-safe, so handlers on either loop or in
a pool thread report the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from executor.artifacts import ArtifactUploader
from executor.handlers import HandlerRegistry
from executor.loop_thread import Inbox, LoopThread
from executor.runs import Attempt, AttemptKey, HandlerRuns
from executor.stream import (
    DEFAULT_HEARTBEAT_INTERVAL,
    MAX_PENDING_RESULTS,
    ConnectStream,
    take_batch,
)
from executor.watchdog import LoopWatchdog
from jobsched.client_spans import client_interceptors
from jobsched.tls import ClientTLS
from jobsched.tracing import Tracing
from jobsched.v1 import executor_service_pb2 as pb

if TYPE_CHECKING:
    from executor.metrics import ExecutorMetrics

__all__ = ["DEFAULT_HEARTBEAT_INTERVAL", "MAX_PENDING_RESULTS", "Executor", "take_batch"]

log = logging.getLogger("jobsched.executor")


class Executor:
    """Runs jobs for a scheduler. `start()` connects in the background; `stop(grace)` drains.

    Call `start`, `stop` and `wait_registered` from one event loop: handlers run on it. The
    properties may be read from anywhere.

    Stopping follows "stop taking work, wait, then hand back": a heartbeat with `draining` tells
    the scheduler to send no more assignments (any already on the way are handed back at once
    with `JobResult.released`), running handlers get up to `grace` seconds, the rest are
    cancelled and handed back the same way (requeued without burning an attempt), and the stream
    is closed once the results are acknowledged (or `result_flush_timeout` passes); then the
    stream thread has ended.

    `loop_block_warning`: seconds the handler loop may go unresponsive (a blocking call in an
    ``async def`` handler) before a warning names the job blocking it.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        name: str,
        capacity: int,
        registry: HandlerRegistry,
        queues: Iterable[str] = (),
        labels: dict[str, str] | None = None,
        cancel_grace: float = 5.0,
        progress_interval: float = 0.05,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        register_timeout: float = 10.0,
        peer_timeout: float = 30.0,
        result_flush_timeout: float = 2.0,
        loop_block_warning: float = 1.0,
        tls: ClientTLS | None = None,
        token: str | None = None,
        metrics: ExecutorMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """`tracing`: the spans' provider (jobsched/tracing.py), None for none; it stays
        the caller's to shut down."""
        if not addresses:
            raise ValueError("at least one scheduler address is needed")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.name = name
        self.capacity = capacity
        self.registry = registry
        self.cancel_grace = cancel_grace
        self.result_flush_timeout = result_flush_timeout
        self.loop_block_warning = loop_block_warning
        self._stream = ConnectStream(
            addresses,
            name=name,
            capacity=capacity,
            registry=registry,
            queues=[q.strip().lower() for q in queues],
            labels=dict(labels or {}),
            start_attempts=self._start_attempts,
            stop_attempt=self._stop_attempt,
            on_registration=self._registration_changed,
            progress_interval=progress_interval,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            register_timeout=register_timeout,
            peer_timeout=peer_timeout,
            tls=tls,
            token=token,
        )
        self._runs = HandlerRuns(
            name=name,
            capacity=capacity,
            cancel_grace=cancel_grace,
            report=self._report,
            max_result_bytes=lambda: self._stream.max_result_bytes,
            tracer=tracing.tracer if tracing is not None else None,
        )
        if tracing is not None:
            self._stream.interceptors = client_interceptors(tracing.tracer)
        self.uploads = ArtifactUploader(
            name,
            lambda: (self._stream.address, self._stream.session_token),
            tls=tls,
            token=token,
        )
        self._thread = LoopThread(f"executor {name} stream")
        self._inbox: Inbox | None = None  # the handler loop's
        self._registered = asyncio.Event()  # on the handler loop, following the stream's
        self._started = False
        self._stopping = False
        self.metrics = metrics  # executor/metrics.py; None: off
        if metrics is not None:
            metrics.register_gauges(lambda: len(self.running))

    # Lifecycle (handler loop).

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("executor already started")
        self._started = True
        loop = asyncio.get_running_loop()
        self._inbox = Inbox(loop)
        self.uploads.bind(loop)
        watchdog = LoopWatchdog(loop, threshold=self.loop_block_warning, job_of=self._runs.job_of)
        await self._thread.start(lambda: self._stream_main(watchdog))

    async def _stream_main(self, watchdog: LoopWatchdog) -> None:
        watching = asyncio.create_task(watchdog.run(), name="executor watchdog")
        try:
            await self._stream.run()
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking work, wait up to `grace` seconds for running handlers, cancel the rest."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        self._runs.stopping = True
        # A round trip: once it is back, every assignment the stream took has reached this loop.
        await self._thread.run(self._stream.begin_drain())
        log.info(
            "executor stopping",
            extra={"fields": {"event": "executor.stopping", "running": len(self.running)}},
        )
        await self._runs.drain(grace)
        await self._thread.run(self._stream.close(self.result_flush_timeout))
        await self._thread.join()
        self._runs.close()
        await self.uploads.close()
        log.info("executor stopped", extra={"fields": {"event": "executor.stopped"}})

    async def wait_registered(self) -> None:
        """Wait until a stream is registered with a scheduler."""
        await self._registered.wait()

    @property
    def registered(self) -> bool:
        return self._stream.registered

    @property
    def running(self) -> list[AttemptKey]:
        """The (job id, attempt) pairs whose handlers are running."""
        return self._stream.running

    @property
    def session_id(self) -> str:
        """The session of the current (or last) registered stream."""
        return self._stream.session_id

    @property
    def heartbeat_interval(self) -> float:
        return self._stream.heartbeat_interval

    # Crossings between the loops.

    def _start_attempts(self, attempts: list[Attempt]) -> None:
        # (stream thread) Run these attempts' handlers.
        assert self._inbox is not None
        for attempt in attempts:
            attempt.ctx.artifact_uploader = self.uploads
        if self.metrics is not None:
            self.metrics.attempts_started(attempts)
        self._inbox.post(self._runs.start, attempts)

    def _stop_attempt(self, attempt: Attempt) -> None:
        # (stream thread) Ask this attempt's handler to stop.
        assert self._inbox is not None
        self._inbox.post(self._runs.request_stop, attempt)

    def _report(self, outcomes: list[tuple[Attempt, pb.JobResult]]) -> None:
        # (handler loop) Outcomes go to the stream, which sends them.
        if self.metrics is not None:
            self.metrics.attempts_finished(outcomes)
        self._thread.post(self._stream.finished, outcomes)

    def _registration_changed(self, registered: bool) -> None:
        # (stream thread) The handler loop's event follows; posted calls keep their order.
        assert self._inbox is not None
        if self.metrics is not None:
            self.metrics.registration_changed(registered)
        self._inbox.post(self._registered.set if registered else self._registered.clear)
