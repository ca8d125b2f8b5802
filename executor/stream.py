"""The executor's Connect stream to its schedulers; it lives on the executor's stream thread.

Protocol (protos/jobsched/v1/executor_service.proto): Register first, then wait for Registered;
for each Assignment send AssignmentAck and hand the attempt to the handler side (never more than
`capacity` at once), stream ProgressReport / LogReport while it runs, and send its JobResult when
the handler side reports the outcome. Heartbeats carry the running attempts and renew their
leases; they go out every `Registered.heartbeat_interval` whatever the handlers do, as no handler
code runs on this thread. A CancelAssignment is passed on to the handler side.

When the stream ends or fails it reconnects (jittered exponential backoff, rotating through the
scheduler addresses while registration fails) and re-registers with its in-flight attempts (those
still running and those whose result the scheduler has not acknowledged yet) and the session
token of its last session, which proves it is the same executor. Results stay buffered until a
ResultAck arrives and are re-sent after a reconnect. A Register refused because the name is in
use by a live session (ALREADY_EXISTS) is logged as an error and retried with the same backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from executor.handlers import (
    HandlerRegistry,
    JobContext,
    ProgressUpdate,
    UnknownJobTypeError,
)
from executor.loop_thread import Inbox
from executor.runs import Attempt, AttemptKey
from jobsched import batching, keepalive
from jobsched.client import balancing
from jobsched.tls import ClientTLS, open_channel
from jobsched.tokens import bearer_metadata
from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import executor_service_pb2_grpc, job_pb2

log = logging.getLogger("jobsched.executor")

DEFAULT_HEARTBEAT_INTERVAL = 3.0
# Results not acknowledged by the scheduler are kept (and re-sent after a reconnect) up to this
# many; beyond it the oldest are forgotten and the scheduler's lease rescue takes over.
MAX_PENDING_RESULTS = 1000
_MAX_INT32 = 2**31 - 1
# gRPC completes the operations of a cancelled call on its poller thread a moment later and
# posts them to the call's loop; closing the loop before then makes gRPC log "Event loop is
# closed" on another loop. A stream ended by the scheduler leaves nothing behind.
_GRPC_SETTLE = 0.1


class RegistrationRefusedError(ConnectionError):
    """The scheduler ended the stream before Registered."""

    def __init__(self, address: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{address} ended the stream before Registered ({code.name}: {details})")
        self.code = code
        self.details = details


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


class ConnectStream:
    """The stream's state and loops. `run()` on the stream thread until `close()`; `running`,
    `registered`, `session_id`, `heartbeat_interval` and `max_result_bytes` may be read from
    any thread."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        name: str,
        capacity: int,
        registry: HandlerRegistry,
        queues: Iterable[str],
        labels: dict[str, str],
        start_attempts: Callable[[list[Attempt]], None],
        stop_attempt: Callable[[Attempt], None],
        on_registration: Callable[[bool], None],
        progress_interval: float,
        backoff_initial: float,
        backoff_max: float,
        register_timeout: float,
        peer_timeout: float,
        tls: ClientTLS | None = None,
        token: str | None = None,
    ) -> None:
        self.addresses = list(addresses)
        self.tls = tls
        # The Connect call's client span, with tracing on (set by the Executor).
        self.interceptors: list[grpc.aio.ClientInterceptor] = []
        # Its credential's tenants are the only ones whose jobs it receives.
        self.metadata = bearer_metadata(token)
        self.name = name
        self.capacity = capacity
        self.registry = registry
        self.queues = list(queues)
        self.labels = labels
        self.progress_interval = progress_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.register_timeout = register_timeout
        self.peer_timeout = peer_timeout
        # The handler side: run these attempts, stop this one (they post to the handler loop).
        self._start_attempts = start_attempts
        self._stop_attempt = stop_attempt
        self._on_registration = on_registration

        # From the last Registered.
        self.session_id = ""
        self.address = ""  # of the scheduler of the current (or last) registration
        self.heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
        self.max_result_bytes = 0  # 0: the scheduler did not say (the default limit applies)
        self.ack_timeout: float | None = None
        self.heartbeat_timeout: float | None = None
        self._session_token = ""  # a secret: sent back on reconnect, never logged
        self.registered = False

        # Written on the stream thread only; the lock is for `running`, read from others.
        self._runs: dict[AttemptKey, Attempt] = {}
        self._runs_lock = threading.Lock()
        self._pending_results: dict[AttemptKey, pb.JobResult] = {}
        self._outbox: asyncio.Queue[pb.ConnectRequest | None] | None = None
        self._accepting = True
        self._stopping = False
        self._saw_ping = False
        self._cut = False  # the last call was cancelled rather than ended by the scheduler
        # Made by run(), on the stream thread's loop.
        self._inbox: Inbox | None = None
        self._closing: asyncio.Event | None = None
        self._closed: asyncio.Event | None = None
        self._results_drained: asyncio.Event | None = None
        self._connect: asyncio.Task[None] | None = None

    @property
    def session_token(self) -> str:
        """The last registration's token: artifact uploads prove the executor with it."""
        return self._session_token if self.registered else ""

    @property
    def running(self) -> list[AttemptKey]:
        with self._runs_lock:
            return list(self._runs)

    # Lifecycle (stream thread).

    async def run(self) -> None:
        """The stream's loops, until `close()`."""
        self._inbox = Inbox(asyncio.get_running_loop())
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()
        self._results_drained = asyncio.Event()
        self._results_drained.set()
        self._connect = asyncio.create_task(self._connect_loop(), name=f"executor {self.name}")
        ticker = asyncio.create_task(self._progress_loop(), name="executor progress")
        try:
            await self._closed.wait()
        finally:
            for task in (self._connect, ticker):
                task.cancel()
            await asyncio.gather(self._connect, ticker, return_exceptions=True)
            if self._cut:
                await asyncio.sleep(_GRPC_SETTLE)

    async def begin_drain(self) -> None:
        """Take no more work: a heartbeat with `draining` tells the scheduler to send none, and
        assignments already on the way are handed back at once."""
        self._accepting = False
        self._stopping = True
        self._send(self._heartbeat_request())

    async def close(self, flush_timeout: float) -> None:
        """Wait up to `flush_timeout` for the results to be acknowledged, half-close the stream,
        wait as long again for the scheduler to end it, and end `run()`."""
        assert self._closing is not None
        assert self._closed is not None
        assert self._results_drained is not None
        assert self._connect is not None
        if self._pending_results:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._results_drained.wait(), flush_timeout)
        self._closing.set()
        if self._outbox is not None:
            self._outbox.put_nowait(None)  # half-close: the scheduler ends the stream
        await asyncio.wait({self._connect}, timeout=flush_timeout)
        self._closed.set()

    # Connection.

    def _set_registered(self, registered: bool) -> None:
        if registered != self.registered:
            self.registered = registered
            self._on_registration(registered)

    async def _connect_loop(self) -> None:
        assert self._closing is not None
        delay = self.backoff_initial
        index = 0
        while not self._closing.is_set():
            address = self.addresses[index % len(self.addresses)]
            registered = False
            try:
                registered = await self._session(address)
            except grpc.aio.AioRpcError as exc:
                self._log_failure(address, exc.code(), exc.details() or "")
            except RegistrationRefusedError as exc:
                self._log_failure(address, exc.code, exc.details)
            except Exception:
                log.exception(
                    "executor stream failed",
                    extra={"fields": {"event": "executor.stream_failed", "address": address}},
                )
            finally:
                self._outbox = None
                self._set_registered(False)
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

    def _log_failure(self, address: str, code: grpc.StatusCode, details: str) -> None:
        if code == grpc.StatusCode.ALREADY_EXISTS:
            # Another live session holds the name (another process, or this one's previous
            # stream that the scheduler still thinks alive): it may end, so keep trying.
            log.error(
                "executor name %s is in use by a live session; retrying",
                self.name,
                extra={
                    "fields": {
                        "event": "executor.name_in_use",
                        "executor": self.name,
                        "address": address,
                        "details": details,
                    }
                },
            )
            return
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            # A missing, wrong or revoked key, or one without the executor role: it may be
            # fixed on the scheduler's side (a new key), so keep trying, but say what is wrong.
            log.error(
                "the scheduler refused the executor's credential (--token, JOBSCHED_TOKEN): %s",
                details,
                extra={
                    "fields": {
                        "event": "executor.not_allowed",
                        "address": address,
                        "code": code.name,
                        "details": details,
                    }
                },
            )
            return
        log.warning(
            "executor stream failed",
            extra={
                "fields": {
                    "event": "executor.stream_failed",
                    "address": address,
                    "code": code.name,
                    "details": details,
                }
            },
        )

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
                session_token=self._session_token,
            )
        )

    async def _session(self, address: str) -> bool:
        """One Connect stream; returns whether it got as far as Registered."""
        outbox: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
        outbox.put_nowait(self._register_request())
        options = [*keepalive.channel_options(), *balancing(address)]
        async with open_channel(address, options, self.tls, self.interceptors) as channel:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
            call = stub.Connect(_requests(outbox), metadata=self.metadata)
            try:
                first = await asyncio.wait_for(call.read(), self.register_timeout)
            except TimeoutError:
                self._cut = call.cancel()
                raise ConnectionError(f"no Registered from {address} in time") from None
            except asyncio.CancelledError:  # stopped while registering
                self._cut = call.cancel()
                raise
            if not isinstance(first, pb.ConnectResponse):  # grpc.aio.EOF
                code = await call.code()
                raise RegistrationRefusedError(address, code, await call.details() or "")
            if first.WhichOneof("message") != "registered":
                self._cut = call.cancel()
                raise ConnectionError(
                    f"{address} answered Register with {first.WhichOneof('message')}"
                )
            self._on_registered(first.registered, address)
            self._outbox = outbox
            self._saw_ping = False
            for result in self._pending_results.values():
                outbox.put_nowait(pb.ConnectRequest(result=result))
            self._set_registered(True)
            heartbeat = asyncio.create_task(self._heartbeat_loop(outbox))
            try:
                await self._read_loop(call, address)
            finally:
                heartbeat.cancel()
                self._outbox = None
                self._set_registered(False)
                self._cut = call.cancel()
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
            try:
                self._handle(message)
            except Exception:  # a bug handling one message must not end the stream
                log.exception(
                    "handling a scheduler message failed",
                    extra={
                        "fields": {
                            "event": "executor.internal_error",
                            "message": message.WhichOneof("message"),
                        }
                    },
                )

    def _on_registered(self, registered: pb.Registered, address: str) -> None:
        self.session_id = registered.session_id
        if address:
            self.address = address
        if registered.session_token:
            self._session_token = registered.session_token
        interval = _seconds(registered.heartbeat_interval)
        self.heartbeat_interval = interval if interval > 0 else DEFAULT_HEARTBEAT_INTERVAL
        self.max_result_bytes = registered.max_result_bytes
        if registered.HasField("ack_timeout"):
            self.ack_timeout = _seconds(registered.ack_timeout)
        if registered.HasField("heartbeat_timeout"):
            self.heartbeat_timeout = _seconds(registered.heartbeat_timeout)
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

    # Progress and log lines.

    async def _progress_loop(self) -> None:
        # One tick for all jobs: log lines go out in batches; progress normally went out when
        # reported (_progress_reported), the tick catches what waited for a stream.
        while True:
            await asyncio.sleep(self.progress_interval)
            for attempt in list(self._runs.values()):
                self._flush_reports(attempt)

    def _progress_reported(self, attempt: Attempt) -> None:
        """A handler reported progress: send it now if the job's last one went out at least
        progress_interval ago, else once that interval ends (the latest value then)."""
        if attempt.progress_handle is not None or self._runs.get(attempt.key) is not attempt:
            return  # a send is due already and will carry this value, or the attempt is over
        loop = asyncio.get_running_loop()
        due = attempt.progress_sent_at + self.progress_interval
        if loop.time() >= due:
            self._flush_progress(attempt)
        else:
            attempt.progress_handle = loop.call_at(due, self._progress_due, attempt)

    def _progress_due(self, attempt: Attempt) -> None:
        attempt.progress_handle = None
        if self._runs.get(attempt.key) is attempt:
            self._flush_progress(attempt)

    def _flush_progress(self, attempt: Attempt) -> None:
        if self._outbox is None:
            return  # kept for the next stream
        update = attempt.ctx.take_progress()
        if update is not None:
            attempt.progress_sent_at = asyncio.get_running_loop().time()
            self._send(
                pb.ConnectRequest(
                    progress=pb.ProgressReport(
                        attempt=_attempt(attempt.key), progress=_progress_message(update)
                    )
                )
            )

    def _flush_reports(self, attempt: Attempt) -> None:
        if self._outbox is None:
            return  # keep them for the next stream
        if attempt.progress_handle is None:
            self._flush_progress(attempt)
        logs = attempt.ctx.take_logs()
        if logs.lines:
            self._send(
                pb.ConnectRequest(
                    log=pb.LogReport(
                        attempt=_attempt(attempt.key),
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
            self._on_assignments(message.assignments.assignments)
        elif kind == "result_acks":
            for ack in message.result_acks.acks:
                self._on_result_ack(ack)
        elif kind == "assignment":
            self._on_assignments([message.assignment])
        elif kind == "cancel":
            self._on_cancel(message.cancel)
        elif kind == "result_ack":
            self._on_result_ack(message.result_ack)
        elif kind == "ping":
            self._saw_ping = True
        elif kind == "registered":
            self._on_registered(message.registered, "")

    def _on_assignments(self, assignments: Iterable[pb.Assignment]) -> None:
        started: list[Attempt] = []
        for assignment in assignments:
            key = (assignment.attempt.job_id, assignment.attempt.attempt)
            try:
                attempt = self._take(key, assignment)
            except Exception as exc:
                # A bug on this path fails the attempt; it must never end the stream (the
                # attempt would be handed out again and again).
                log.exception(
                    "taking an assignment failed",
                    extra={
                        "fields": {
                            "event": "executor.assignment_failed",
                            "job_id": key[0],
                            "attempt": key[1],
                        }
                    },
                )
                self._send(pb.ConnectRequest(ack=pb.AssignmentAck(attempt=_attempt(key))))
                message = f"the executor failed to take the assignment: {type(exc).__name__}: {exc}"
                self._finish(
                    key, pb.JobResult(failure=pb.JobFailure(message=message, retryable=True))
                )
                continue
            if attempt is None:
                continue
            with self._runs_lock:
                self._runs[key] = attempt
            self._send(pb.ConnectRequest(ack=pb.AssignmentAck(attempt=_attempt(key))))
            started.append(attempt)
            # Per job at DEBUG (the job's events record it anyway): two INFO lines per job were
            # half of this executor's CPU with no-op jobs (bench/RESULTS.md, 2026-12-02).
            log.debug(
                "job started",
                extra={
                    "fields": {
                        "event": "executor.job_started",
                        "job_id": key[0],
                        "attempt": key[1],
                        "type": assignment.type,
                    }
                },
            )
        if started:
            self._start_attempts(started)

    def _take(self, key: AttemptKey, assignment: pb.Assignment) -> Attempt | None:
        """The attempt to start for `assignment`, or None when it is answered otherwise."""
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
            return None
        if key in self._runs:
            self._send(ack)  # re-attached after a reconnect: already running
            return None
        if key in self._pending_results:
            self._send(ack)
            self._send(pb.ConnectRequest(result=self._pending_results[key]))
            return None
        if len(self._runs) >= self.capacity:
            log.warning(
                "assignment beyond capacity ignored",
                extra={"fields": {"event": "executor.over_capacity", **fields}},
            )
            return None
        try:
            handler = self.registry.get(assignment.type)
        except UnknownJobTypeError as exc:
            # Another executor may know the type, so a retry can help.
            self._send(ack)
            self._finish(key, pb.JobResult(failure=pb.JobFailure(message=str(exc), retryable=True)))
            return None
        ctx = JobContext(
            job_id=key[0],
            attempt=key[1],
            queue=assignment.queue,
            type=assignment.type,
            payload=assignment.payload,
            labels=dict(assignment.labels),
            tenant=assignment.tenant,
        )
        ctx.traceparent = assignment.traceparent  # continued by the attempt's span
        timeout = _seconds(assignment.timeout) if assignment.HasField("timeout") else 0.0
        attempt = Attempt(
            key=key, ctx=ctx, handler=handler, timeout=timeout if timeout > 0 else None
        )
        inbox = self._inbox
        assert inbox is not None
        ctx.on_progress = lambda: inbox.post(self._progress_reported, attempt)
        return attempt

    def _on_cancel(self, cancel: pb.CancelAssignment) -> None:
        attempt = self._runs.get((cancel.attempt.job_id, cancel.attempt.attempt))
        if attempt is None:
            return
        attempt.cancel_requested = True
        self._stop_attempt(attempt)

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
        if not self._pending_results and self._results_drained is not None:
            self._results_drained.set()

    # Outcomes.

    def finished(self, outcomes: list[tuple[Attempt, pb.JobResult]]) -> None:
        """The handler side reports these attempts over (posted to the stream thread): their
        last progress and log lines go out, then their results."""
        for attempt, result in outcomes:
            if attempt.progress_handle is not None:
                attempt.progress_handle.cancel()
                attempt.progress_handle = None
            self._flush_reports(attempt)
            with self._runs_lock:
                if self._runs.get(attempt.key) is attempt:
                    del self._runs[attempt.key]
            self._finish(attempt.key, result)

    def _finish(self, key: AttemptKey, result: pb.JobResult) -> None:
        result.attempt.CopyFrom(_attempt(key))
        self._pending_results[key] = result
        while len(self._pending_results) > MAX_PENDING_RESULTS:
            del self._pending_results[next(iter(self._pending_results))]
        if self._results_drained is not None:
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
