"""The executor service: holds a Connect stream to a scheduler and runs the jobs it is assigned.

Protocol (protos/jobsched/v1/executor_service.proto): the executor sends Register first and waits
for Registered; then for each Assignment it sends AssignmentAck and runs the handler (never more
than `capacity` at once), streams ProgressReport / LogReport while it runs, and sends JobResult at
the end. Heartbeats carry the running attempts and renew their leases. A CancelAssignment sets
the handler's `ctx.cancelled`; a handler that ignores it is cancelled after `cancel_grace`.

When the stream ends or fails the executor reconnects (jittered exponential backoff, rotating
through the scheduler addresses while registration fails) and re-registers with its in-flight
attempts: those still running and those whose result the scheduler has not acknowledged yet.
Results stay buffered until a ResultAck arrives and are re-sent after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from executor.handlers import (
    HandlerRegistry,
    HandlerResult,
    JobCancelledError,
    JobContext,
    NonRetryableError,
    ProgressUpdate,
    UnknownJobTypeError,
    encode_result,
)
from jobsched import batching, keepalive
from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import executor_service_pb2_grpc, job_pb2

log = logging.getLogger("jobsched.executor")

AttemptKey = tuple[str, int]

DEFAULT_HEARTBEAT_INTERVAL = 3.0
# Results not acknowledged by the scheduler are kept (and re-sent after a reconnect) up to this
# many; beyond it the oldest are forgotten and the scheduler's lease rescue takes over.
MAX_PENDING_RESULTS = 1000
_MAX_INT32 = 2**31 - 1


@dataclass(eq=False)
class _Run:
    ctx: JobContext
    task: asyncio.Task[HandlerResult]
    timeout: float | None = None
    supervisor: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    cancel_reason: str = ""
    timed_out: bool = False
    kill_handle: asyncio.TimerHandle | None = None
    timeout_handle: asyncio.TimerHandle | None = None
    # Progress goes out at once unless sent less than progress_interval ago (loop time).
    progress_sent_at: float = float("-inf")
    progress_handle: asyncio.TimerHandle | None = None

    @property
    def key(self) -> AttemptKey:
        return (self.ctx.job_id, self.ctx.attempt)


def _attempt(key: AttemptKey) -> pb.JobAttempt:
    return pb.JobAttempt(job_id=key[0], attempt=key[1])


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


def _progress_message(update: ProgressUpdate) -> job_pb2.Progress:
    message = job_pb2.Progress(
        percent=update.percent,
        step=update.step,
        message=update.message,
        update_time=_timestamp(update.update_time),
    )
    if update.eta is not None:
        message.eta.CopyFrom(_timestamp(update.eta))
    return message


def _merged(run: list[pb.ConnectRequest]) -> pb.ConnectRequest:
    """One message for a run of acks or of results."""
    if run[0].WhichOneof("message") == "ack":
        return pb.ConnectRequest(acks=pb.AssignmentAckBatch(acks=[m.ack for m in run]))
    return pb.ConnectRequest(results=pb.JobResultBatch(results=[m.result for m in run]))


def take_batch(
    first: pb.ConnectRequest, outbox: asyncio.Queue[pb.ConnectRequest | None]
) -> tuple[list[pb.ConnectRequest], bool]:
    """What the outbox holds, consecutive acks and results merged; see jobsched.batching."""
    return batching.take_batch(first, outbox, _MERGEABLE, _merged)


_MERGEABLE = frozenset({"ack", "result"})


async def _requests(
    outbox: asyncio.Queue[pb.ConnectRequest | None],
) -> AsyncIterator[pb.ConnectRequest]:
    """The request side of a Connect stream; None half-closes it. What is queued together goes
    out together (`take_batch`)."""
    while (item := await outbox.get()) is not None:
        if outbox.empty():
            yield item
            continue
        batch, closed = take_batch(item, outbox)
        for each in batch:
            yield each
        if closed:
            return


class Executor:
    """Runs jobs for a scheduler. `start()` connects in the background; `stop(grace)` drains.

    Stopping follows "stop taking work, wait, then hand back": a heartbeat with `draining` tells
    the scheduler to send no more assignments (any already on the way are handed back at once
    with `JobResult.released`), running handlers get up to `grace` seconds, the rest are
    cancelled and handed back the same way (requeued without burning an attempt), and the stream
    is closed once the results are acknowledged (or `result_flush_timeout` passes).
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
    ) -> None:
        if not addresses:
            raise ValueError("at least one scheduler address is needed")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.addresses = list(addresses)
        self.name = name
        self.capacity = capacity
        self.registry = registry
        self.queues = [q.strip().lower() for q in queues]
        self.labels = dict(labels or {})
        self.cancel_grace = cancel_grace
        self.progress_interval = progress_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.register_timeout = register_timeout
        self.peer_timeout = peer_timeout
        self.result_flush_timeout = result_flush_timeout
        self.heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
        self.session_id = ""

        self._runs: dict[AttemptKey, _Run] = {}
        self._pending_results: dict[AttemptKey, pb.JobResult] = {}
        self._results_drained = asyncio.Event()
        self._results_drained.set()
        self._outbox: asyncio.Queue[pb.ConnectRequest | None] | None = None
        self._registered = asyncio.Event()
        self._closing = asyncio.Event()
        self._accepting = True
        self._stopping = False
        self._saw_ping = False
        self._main: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None

    # Lifecycle.

    async def start(self) -> None:
        if self._main is not None:
            raise RuntimeError("executor already started")
        self._main = asyncio.create_task(self._connect_loop(), name=f"executor {self.name}")
        self._sender = asyncio.create_task(self._progress_loop(), name="executor progress")

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking work, wait up to `grace` seconds for running handlers, cancel the rest."""
        if self._main is None or self._stopping:
            return
        self._accepting = False
        self._stopping = True
        self._send(self._heartbeat_request())  # draining: the scheduler stops assigning
        log.info(
            "executor stopping",
            extra={"fields": {"event": "executor.stopping", "running": len(self._runs)}},
        )
        supervisors = [run.supervisor for run in self._runs.values() if run.supervisor]
        if supervisors:
            await asyncio.wait(supervisors, timeout=grace)
        for run in list(self._runs.values()):
            run.ctx.cancelled.set()
            run.task.cancel()
        supervisors = [run.supervisor for run in self._runs.values() if run.supervisor]
        if supervisors:
            await asyncio.gather(*supervisors, return_exceptions=True)
        if self._pending_results:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._results_drained.wait(), self.result_flush_timeout)
        self._closing.set()
        if self._outbox is not None:
            self._outbox.put_nowait(None)  # half-close: the scheduler ends the stream
        _, pending = await asyncio.wait({self._main}, timeout=self.result_flush_timeout)
        for task in (*pending, self._sender):
            if task is not None:
                task.cancel()
        await asyncio.gather(self._main, *(t for t in (self._sender,) if t), return_exceptions=True)
        log.info("executor stopped", extra={"fields": {"event": "executor.stopped"}})

    async def wait_registered(self) -> None:
        """Wait until a stream is registered with a scheduler."""
        await self._registered.wait()

    @property
    def registered(self) -> bool:
        return self._registered.is_set()

    @property
    def running(self) -> list[AttemptKey]:
        """The (job id, attempt) pairs whose handlers are running."""
        return list(self._runs)

    # Connection.

    async def _connect_loop(self) -> None:
        delay = self.backoff_initial
        index = 0
        while not self._closing.is_set():
            address = self.addresses[index % len(self.addresses)]
            registered = False
            try:
                registered = await self._session(address)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "executor stream failed",
                    extra={
                        "fields": {
                            "event": "executor.stream_failed",
                            "address": address,
                            "code": exc.code().name,
                            "details": exc.details(),
                        }
                    },
                )
            except Exception:
                log.exception(
                    "executor stream failed",
                    extra={"fields": {"event": "executor.stream_failed", "address": address}},
                )
            finally:
                self._outbox = None
                self._registered.clear()
            if self._closing.is_set():
                break
            if registered:
                delay = self.backoff_initial
            else:
                index += 1
            pause = min(self.backoff_max, delay * random.uniform(0.5, 1.5))
            delay = min(self.backoff_max, delay * 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), pause)

    def _register_request(self) -> pb.ConnectRequest:
        in_flight = [*self._runs, *(k for k in self._pending_results if k not in self._runs)]
        return pb.ConnectRequest(
            register=pb.Register(
                name=self.name,
                capacity=self.capacity,
                job_types=self.registry.types,
                queues=self.queues,
                labels=self.labels,
                in_flight=[_attempt(k) for k in in_flight],
                accepts_batches=True,
            )
        )

    async def _session(self, address: str) -> bool:
        """One Connect stream; returns whether it got as far as Registered."""
        outbox: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
        outbox.put_nowait(self._register_request())
        options = keepalive.channel_options()
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
            call = stub.Connect(_requests(outbox))
            try:
                first = await asyncio.wait_for(call.read(), self.register_timeout)
            except TimeoutError:
                call.cancel()
                raise ConnectionError(f"no Registered from {address} in time") from None
            if not isinstance(first, pb.ConnectResponse):  # grpc.aio.EOF
                code = await call.code()
                raise ConnectionError(f"{address} ended the stream before Registered ({code})")
            if first.WhichOneof("message") != "registered":
                call.cancel()
                raise ConnectionError(
                    f"{address} answered Register with {first.WhichOneof('message')}"
                )
            self._on_registered(first.registered, address)
            self._outbox = outbox
            self._saw_ping = False
            for result in self._pending_results.values():
                outbox.put_nowait(pb.ConnectRequest(result=result))
            self._registered.set()
            heartbeat = asyncio.create_task(self._heartbeat_loop(outbox))
            try:
                await self._read_loop(call, address)
            finally:
                heartbeat.cancel()
                self._outbox = None
                self._registered.clear()
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
        return True

    async def _read_loop(
        self,
        call: grpc.aio.StreamStreamCall[pb.ConnectRequest, pb.ConnectResponse],
        address: str,
    ) -> None:
        while True:
            # A silent peer means a half-open link, but only a scheduler that pings can be
            # told apart from an idle one.
            timeout = self.peer_timeout if self._saw_ping else None
            try:
                message = await asyncio.wait_for(call.read(), timeout)
            except TimeoutError:
                log.warning(
                    "scheduler silent, reconnecting",
                    extra={"fields": {"event": "executor.peer_timeout", "address": address}},
                )
                return
            if not isinstance(message, pb.ConnectResponse):  # grpc.aio.EOF
                code = await call.code()
                log.info(
                    "executor stream ended",
                    extra={
                        "fields": {
                            "event": "executor.stream_ended",
                            "address": address,
                            "code": code.name,
                        }
                    },
                )
                return
            self._handle(message)

    def _on_registered(self, registered: pb.Registered, address: str) -> None:
        self.session_id = registered.session_id
        interval = _seconds(registered.heartbeat_interval)
        self.heartbeat_interval = interval if interval > 0 else DEFAULT_HEARTBEAT_INTERVAL
        log.info(
            "executor registered",
            extra={
                "fields": {
                    "event": "executor.registered",
                    "address": address,
                    "session_id": self.session_id,
                    "executor": self.name,
                    "in_flight": len(self._runs) + len(self._pending_results),
                }
            },
        )

    def _send(self, request: pb.ConnectRequest) -> None:
        # Without a stream, acks, progress and heartbeats are simply lost; results are kept in
        # _pending_results and re-sent on the next stream.
        if self._outbox is not None:
            self._outbox.put_nowait(request)

    async def _heartbeat_loop(self, outbox: asyncio.Queue[pb.ConnectRequest | None]) -> None:
        unacknowledged: set[AttemptKey] = set()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if self._outbox is not outbox:
                return
            outbox.put_nowait(self._heartbeat_request())
            # A result still unacknowledged a whole interval later is sent again: the scheduler
            # does not answer while its store is unavailable, and records it once it is back.
            for key in unacknowledged & self._pending_results.keys():
                outbox.put_nowait(pb.ConnectRequest(result=self._pending_results[key]))
            unacknowledged = set(self._pending_results)

    def _heartbeat_request(self) -> pb.ConnectRequest:
        return pb.ConnectRequest(
            heartbeat=pb.Heartbeat(
                send_time=_timestamp(datetime.now(UTC)),
                running=[_attempt(k) for k in self._runs],
                draining=self._stopping,
            )
        )

    async def _progress_loop(self) -> None:
        # One tick for all jobs: log lines go out in batches; progress normally went out when
        # reported (_progress_reported), the tick catches what waited for a stream.
        while True:
            await asyncio.sleep(self.progress_interval)
            for run in list(self._runs.values()):
                self._flush_reports(run)

    def _progress_reported(self, run: _Run) -> None:
        """A handler reported progress: send it now if the job's last one went out at least
        progress_interval ago, else once that interval ends (the latest value then)."""
        if run.progress_handle is not None:
            return  # a send is due already and will carry this value
        loop = asyncio.get_running_loop()
        due = run.progress_sent_at + self.progress_interval
        if loop.time() >= due:
            self._flush_progress(run)
        else:
            run.progress_handle = loop.call_at(due, self._progress_due, run)

    def _progress_due(self, run: _Run) -> None:
        run.progress_handle = None
        if self._runs.get(run.key) is run:
            self._flush_progress(run)

    def _flush_progress(self, run: _Run) -> None:
        if self._outbox is None:
            return  # kept for the next stream
        update = run.ctx.take_progress()
        if update is not None:
            run.progress_sent_at = asyncio.get_running_loop().time()
            self._send(
                pb.ConnectRequest(
                    progress=pb.ProgressReport(
                        attempt=_attempt(run.key), progress=_progress_message(update)
                    )
                )
            )

    def _flush_reports(self, run: _Run) -> None:
        if self._outbox is None:
            return  # keep them for the next stream
        if run.progress_handle is None:
            self._flush_progress(run)
        logs = run.ctx.take_logs()
        if logs.lines:
            self._send(
                pb.ConnectRequest(
                    log=pb.LogReport(
                        attempt=_attempt(run.key),
                        lines=logs.lines,
                        # int32 on the wire; lines that far out are beyond any kept bound
                        first_line_number=min(logs.first_line_number, _MAX_INT32),
                    )
                )
            )

    # Messages from the scheduler.

    def _handle(self, message: pb.ConnectResponse) -> None:
        kind = message.WhichOneof("message")
        if kind == "assignments":
            for assignment in message.assignments.assignments:
                self._on_assignment(assignment)
        elif kind == "result_acks":
            for ack in message.result_acks.acks:
                self._on_result_ack(ack)
        elif kind == "assignment":
            self._on_assignment(message.assignment)
        elif kind == "cancel":
            self._on_cancel(message.cancel)
        elif kind == "result_ack":
            self._on_result_ack(message.result_ack)
        elif kind == "ping":
            self._saw_ping = True
        elif kind == "registered":
            self._on_registered(message.registered, "")

    def _on_assignment(self, assignment: pb.Assignment) -> None:
        key = (assignment.attempt.job_id, assignment.attempt.attempt)
        fields = {"job_id": key[0], "attempt": key[1], "type": assignment.type}
        ack = pb.ConnectRequest(ack=pb.AssignmentAck(attempt=_attempt(key)))
        if not self._accepting:
            # Sent before the scheduler saw the draining heartbeat: handed back at once.
            log.info(
                "assignment handed back while stopping",
                extra={"fields": {"event": "executor.assignment_released", **fields}},
            )
            self._send(ack)
            self._finish(key, pb.JobResult(released=True))
            return
        if key in self._runs:
            self._send(ack)  # re-attached after a reconnect: already running
            return
        if key in self._pending_results:
            self._send(ack)
            self._send(pb.ConnectRequest(result=self._pending_results[key]))
            return
        if len(self._runs) >= self.capacity:
            log.warning(
                "assignment beyond capacity ignored",
                extra={"fields": {"event": "executor.over_capacity", **fields}},
            )
            return
        ctx = JobContext(
            job_id=key[0],
            attempt=key[1],
            queue=assignment.queue,
            type=assignment.type,
            payload=assignment.payload,
            labels=dict(assignment.labels),
        )
        self._send(ack)
        try:
            handler = self.registry.get(assignment.type)
        except UnknownJobTypeError as exc:
            # Another executor may know the type, so a retry can help.
            self._finish(key, pb.JobResult(failure=pb.JobFailure(message=str(exc), retryable=True)))
            return
        timeout = _seconds(assignment.timeout) if assignment.HasField("timeout") else 0.0
        run = _Run(
            ctx=ctx,
            task=asyncio.create_task(handler(ctx), name=f"job {key[0]}#{key[1]}"),
            timeout=timeout if timeout > 0 else None,
        )
        self._runs[key] = run
        ctx.on_progress = lambda: self._progress_reported(run)
        if run.timeout is not None:
            run.timeout_handle = asyncio.get_running_loop().call_later(
                run.timeout, self._expire, run
            )
        run.supervisor = asyncio.create_task(self._supervise(run))
        # Per job at DEBUG (the job's events record it anyway): two INFO lines per job were half
        # of this executor's CPU with no-op jobs (bench/RESULTS.md, 2026-12-02).
        log.debug("job started", extra={"fields": {"event": "executor.job_started", **fields}})

    def _on_cancel(self, cancel: pb.CancelAssignment) -> None:
        run = self._runs.get((cancel.attempt.job_id, cancel.attempt.attempt))
        if run is None:
            return
        run.cancel_requested = True
        run.cancel_reason = cancel.reason
        self._request_stop(run)

    def _on_result_ack(self, ack: pb.ResultAck) -> None:
        key = (ack.attempt.job_id, ack.attempt.attempt)
        if self._pending_results.pop(key, None) is not None and not ack.accepted:
            log.warning(
                "result rejected",
                extra={
                    "fields": {
                        "event": "executor.result_rejected",
                        "job_id": key[0],
                        "attempt": key[1],
                        "reason": ack.reason,
                    }
                },
            )
        if not self._pending_results:
            self._results_drained.set()

    # Running handlers.

    def _expire(self, run: _Run) -> None:
        run.timed_out = True
        self._request_stop(run)

    def _request_stop(self, run: _Run) -> None:
        run.ctx.cancelled.set()
        if run.kill_handle is None and not run.task.done():
            run.kill_handle = asyncio.get_running_loop().call_later(
                self.cancel_grace, run.task.cancel
            )

    async def _supervise(self, run: _Run) -> None:
        result: pb.JobResult
        try:
            value = await run.task
            payload = encode_result(value)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            result = self._stopped_result(run)
        except JobCancelledError:
            result = self._stopped_result(run)
        except NonRetryableError as exc:
            result = pb.JobResult(failure=pb.JobFailure(message=str(exc), retryable=False))
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            result = pb.JobResult(failure=pb.JobFailure(message=message, retryable=True))
        else:
            result = pb.JobResult(result=payload)
        finally:
            for handle in (run.kill_handle, run.timeout_handle, run.progress_handle):
                if handle is not None:
                    handle.cancel()
            run.progress_handle = None
        self._flush_reports(run)
        self._runs.pop(run.key, None)
        self._finish(run.key, result)

    def _stopped_result(self, run: _Run) -> pb.JobResult:
        if run.cancel_requested:
            return pb.JobResult(cancelled=True)
        if run.timed_out:
            message = f"timed out after {run.timeout:g}s"
            return pb.JobResult(failure=pb.JobFailure(message=message, retryable=True))
        if self._stopping:
            # Shutting down and the handler did not finish within the grace: handed back
            # unfinished, requeued without burning an attempt.
            return pb.JobResult(released=True)
        return pb.JobResult(cancelled=True)

    def _finish(self, key: AttemptKey, result: pb.JobResult) -> None:
        result.attempt.CopyFrom(_attempt(key))
        self._pending_results[key] = result
        while len(self._pending_results) > MAX_PENDING_RESULTS:
            del self._pending_results[next(iter(self._pending_results))]
        self._results_drained.clear()
        self._send(pb.ConnectRequest(result=result))
        outcome = result.WhichOneof("outcome")
        fields: dict[str, object] = {
            "event": "executor.job_finished",
            "job_id": key[0],
            "attempt": key[1],
            "outcome": outcome,
        }
        if outcome == "failure":
            fields["error"] = result.failure.message
            fields["retryable"] = result.failure.retryable
        # Successes at DEBUG, like starts; failures, cancels and hand-backs at INFO.
        level = logging.DEBUG if outcome == "result" else logging.INFO
        log.log(level, "job finished", extra={"fields": fields})
