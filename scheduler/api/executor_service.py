"""ExecutorService.Connect: one bidirectional stream per executor.

The executor registers first (only first: a second Register ends the stream with
FAILED_PRECONDITION); its name must be free unless it proves with its session token that it is
the same executor reconnecting (scheduler/dispatch/registration.py). From then on the scheduler
pushes assignments (never more than the executor's free credits), cancels and pings, and the
executor sends heartbeats (which keep the session alive and renew its leases that run low, one
statement per heartbeat), log lines (numbered from 1: a LogReport without a first_line_number
ends the stream INVALID_ARGUMENT) and results (recorded only for the attempt it was given; a result over
MAX_RESULT_BYTES is refused and fails the attempt without retry). A stream the scheduler ends
(a silent executor, a second Register) ends with that error as its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from jobsched import batching
from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import executor_service_pb2_grpc, job_pb2
from scheduler.auth.identity import current_principal
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.dispatch.registration import Registrar
from scheduler.dispatch.sessions import ExecutorSession
from scheduler.domain.echo import echo
from scheduler.domain.errors import (
    AlreadyRegistered,
    ConcurrentModification,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    JobschedError,
    Unavailable,
)
from scheduler.domain.jobs import Progress
from scheduler.domain.results import MAX_RESULT_BYTES, clip_error, oversized_result
from scheduler.domain.validation import MAX_LABEL_VALUE, MAX_LABELS, check_name, validate_job_id

log = logging.getLogger("jobsched.dispatch")

Context = grpc.aio.ServicerContext[Any, Any]
MAX_CAPACITY = 10_000
MAX_NAME = 200
MAX_PROGRESS_TEXT = 1000
# What one Register or Heartbeat may list: far above any real executor, far below what a
# 64 MiB message could carry (every entry is looked at).
MAX_REGISTER_NAMES = 1000  # job types; queues
MAX_ATTEMPTS_LISTED = MAX_CAPACITY  # Register.in_flight, Heartbeat.running
MAX_EXECUTOR_LABEL_KEY = 64


def _duration(value: timedelta) -> Duration:
    d = Duration()
    d.FromTimedelta(value)
    return d


def session_from_register(register: pb.Register) -> ExecutorSession:
    violations: list[FieldViolation] = []
    if not register.name or len(register.name) > MAX_NAME:
        violations.append(
            FieldViolation("register.name", f"1 to {MAX_NAME} characters", limit=str(MAX_NAME))
        )
    if not 1 <= register.capacity <= MAX_CAPACITY:
        violations.append(
            FieldViolation(
                "register.capacity", f"must be in [1, {MAX_CAPACITY}]", limit=f"[1, {MAX_CAPACITY}]"
            )
        )
    if not register.job_types:
        violations.append(FieldViolation("register.job_types", "at least one job type"))
    too_long = [
        FieldViolation(path, f"at most {bound} entries, not {len(listed)}")
        for path, listed, bound in (
            ("register.job_types", register.job_types, MAX_REGISTER_NAMES),
            ("register.queues", register.queues, MAX_REGISTER_NAMES),
            ("register.in_flight", register.in_flight, MAX_ATTEMPTS_LISTED),
            ("register.labels", register.labels, MAX_LABELS),
        )
        if len(listed) > bound
    ]
    if too_long:  # refused before each of too many entries is looked at
        raise InvalidArgument([*violations, *too_long])
    for key, value in register.labels.items():
        label = f"register.labels[{echo(key)}]"
        if not key or len(key) > MAX_EXECUTOR_LABEL_KEY:
            violations.append(
                FieldViolation(label, f"key of 1 to {MAX_EXECUTOR_LABEL_KEY} characters")
            )
        if len(value) > MAX_LABEL_VALUE:
            violations.append(
                FieldViolation(label, f"value is longer than {MAX_LABEL_VALUE} characters")
            )
    types = [
        check_name(t, f"register.job_types[{i}]", violations)
        for i, t in enumerate(register.job_types)
    ]
    queues = [
        check_name(q, f"register.queues[{i}]", violations) for i, q in enumerate(register.queues)
    ]
    for i, attempt in enumerate(register.in_flight):
        try:
            validate_job_id(attempt.job_id, f"register.in_flight[{i}].job_id")
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        if attempt.attempt < 1:
            violations.append(
                FieldViolation(f"register.in_flight[{i}].attempt", "must be at least 1")
            )
    if violations:
        raise InvalidArgument(violations)
    return ExecutorSession(
        name=register.name,
        capacity=register.capacity,
        job_types=tuple(sorted(set(types))),
        queues=tuple(sorted(set(queues))),
        accepts_batches=register.accepts_batches,
    )


def _unnumbered_lines() -> InvalidArgument:
    """The error ending a stream that sent a LogReport its lines cannot be numbered from (they
    were dropped silently before: an implementer left first_line_number unset)."""
    return InvalidArgument(
        [
            FieldViolation(
                "log.first_line_number",
                "must be at least 1: an attempt's log lines are numbered from 1",
                limit="1",
            )
        ]
    )


def _merged(run: list[pb.ConnectResponse]) -> pb.ConnectResponse:
    """One message for a run of assignments or of result acks."""
    if run[0].WhichOneof("message") == "assignment":
        return pb.ConnectResponse(
            assignments=pb.AssignmentBatch(assignments=[m.assignment for m in run])
        )
    return pb.ConnectResponse(result_acks=pb.ResultAckBatch(acks=[m.result_ack for m in run]))


def take_batch(
    first: pb.ConnectResponse, outbox: asyncio.Queue[pb.ConnectResponse | None]
) -> tuple[list[pb.ConnectResponse], bool]:
    """What the outbox holds, consecutive assignments and result acks merged (under load they
    come in runs: a claim's assignments, a group commit's acks); see jobsched.batching."""
    return batching.take_batch(first, outbox, _MERGEABLE, _merged)


_MERGEABLE = frozenset({"assignment", "result_ack"})


def in_flight_of(register: pb.Register) -> list[tuple[str, int]]:
    """The (job id, attempt) pairs a reconnecting executor still holds (validated already)."""
    return list(dict.fromkeys((validate_job_id(a.job_id), a.attempt) for a in register.in_flight))


def _eta(progress: job_pb2.Progress) -> datetime | None:
    if not progress.HasField("eta"):
        return None
    try:
        return progress.eta.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None  # an unusable estimate is no estimate


class ExecutorService(executor_service_pb2_grpc.ExecutorServiceServicer):
    def __init__(
        self,
        dispatcher: Dispatcher,
        registrar: Registrar,
        heartbeat_interval: float = 3.0,
        heartbeat_timeout: timedelta = timedelta(seconds=12),
    ) -> None:
        self.dispatcher = dispatcher
        self.registrar = registrar
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self._recording: set[asyncio.Task[None]] = set()  # results being recorded

    async def Connect(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], context: Context
    ) -> AsyncIterator[pb.ConnectResponse]:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("message") != "register":
            raise InvalidArgument(
                [FieldViolation("register", "the first message must be a Register")]
            )
        session = session_from_register(first.register)
        session.session_id = str(uuid.uuid4())
        principal = current_principal()
        if principal is not None:  # only its credential's tenants' jobs
            session.tenants = principal.tenant_filter
            session.credential_expires_at = principal.expires_at
            if principal.kind == "api_key":
                session.key_id = principal.id
        # Two heartbeat intervals without one: no more assignments (see dispatch/watchdog.py).
        session.silent_after = 2 * self.heartbeat_interval
        token = await self.registrar.admit(
            session, first.register.session_token, in_flight_of(first.register)
        )
        tasks = [
            asyncio.create_task(self._read(request_iterator, session), name="executor-reader"),
            asyncio.create_task(self._ping(session), name="executor-pinger"),
        ]
        try:
            yield pb.ConnectResponse(
                registered=pb.Registered(
                    session_id=session.session_id,
                    heartbeat_interval=_duration(timedelta(seconds=self.heartbeat_interval)),
                    lease_duration=_duration(self.dispatcher.lease),
                    session_token=token,
                    ack_timeout=_duration(self.dispatcher.ack_timeout),
                    heartbeat_timeout=_duration(self.heartbeat_timeout),
                    max_result_bytes=MAX_RESULT_BYTES,
                )
            )
            while (message := await session.outbox.get()) is not None:
                if not session.accepts_batches or session.outbox.empty():
                    yield message
                    continue
                batch, closed = take_batch(message, session.outbox)
                for each in batch:
                    yield each
                if closed:
                    break
            if session.ended is not None:
                raise session.ended  # the call's status says why the scheduler ended it
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.dispatcher.remove(session)

    async def _ping(self, session: ExecutorSession) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            now = Timestamp()
            now.GetCurrentTime()
            session.send(pb.ConnectResponse(ping=pb.Ping(send_time=now)))

    async def _read(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], session: ExecutorSession
    ) -> None:
        try:
            async for request in request_iterator:
                kind = request.WhichOneof("message")
                if kind == "results":
                    for result in request.results.results:
                        self._record(session, result)
                elif kind == "acks":
                    for ack in request.acks.acks:
                        self.dispatcher.acknowledge(
                            session, ack.attempt.job_id, ack.attempt.attempt
                        )
                elif kind == "heartbeat":
                    heartbeat = request.heartbeat
                    if len(heartbeat.running) > MAX_ATTEMPTS_LISTED:
                        session.end(
                            InvalidArgument(
                                [
                                    FieldViolation(
                                        "heartbeat.running",
                                        f"at most {MAX_ATTEMPTS_LISTED} attempts, not "
                                        f"{len(heartbeat.running)}",
                                    )
                                ]
                            )
                        )
                        return
                    session.draining = session.draining or heartbeat.draining
                    running = [(a.job_id, a.attempt) for a in heartbeat.running]
                    with contextlib.suppress(JobschedError):
                        await self.dispatcher.heartbeat(session, running)
                elif kind == "result":
                    self._record(session, request.result)
                elif kind == "progress":
                    report = request.progress
                    self.dispatcher.record_progress(
                        session,
                        report.attempt.job_id,
                        report.attempt.attempt,
                        self._progress(report.progress),
                    )
                elif kind == "ack":
                    attempt = request.ack.attempt
                    self.dispatcher.acknowledge(session, attempt.job_id, attempt.attempt)
                elif kind == "log":
                    # Buffered before the next message is read: an attempt's last lines are
                    # there when its result (sent after them) is recorded.
                    logs = request.log
                    if logs.first_line_number < 1:
                        session.end(_unnumbered_lines())
                        return
                    self.dispatcher.record_logs(
                        session,
                        logs.attempt.job_id,
                        logs.attempt.attempt,
                        logs.first_line_number,
                        logs.lines,
                    )
                elif kind == "register":
                    session.end(AlreadyRegistered())
                    return
        finally:
            session.close()

    def _record(self, session: ExecutorSession, result: pb.JobResult) -> None:
        # Not awaited here: results of one stream are recorded concurrently, so that they can
        # share a transaction (see Dispatcher.record_success).
        job_id = result.attempt.job_id
        if job_id in session.in_flight:
            session.results_at[job_id] = time.monotonic()  # it still has the attempt
        if job_id in session.in_flight and job_id not in session.recording:
            session.recording.add(job_id)  # its slot is free: claim for it meanwhile
            self.dispatcher.wake()
        task = asyncio.create_task(self._result(session, result))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    def _progress(self, progress: job_pb2.Progress) -> Progress:
        return Progress(
            percent=progress.percent,
            step=progress.step[:MAX_PROGRESS_TEXT],
            message=progress.message[:MAX_PROGRESS_TEXT],
            eta=_eta(progress),
            updated_at=self.dispatcher.clock(),  # the scheduler's clock: no executor skew
        )

    async def _result(self, session: ExecutorSession, result: pb.JobResult) -> None:
        try:
            await self._answer(session, result)
        finally:
            session.recording.discard(result.attempt.job_id)

    async def _answer(self, session: ExecutorSession, result: pb.JobResult) -> None:
        job_id, attempt = result.attempt.job_id, result.attempt.attempt
        outcome = result.WhichOneof("outcome")
        reason = ""
        try:
            if outcome == "result" and (too_large := oversized_result(result.result)):
                # Not retried: the handler would return as much again.
                await self.dispatcher.record_failure(
                    session, job_id, attempt, too_large, retryable=False
                )
                reason = too_large
            elif outcome == "result":
                await self.dispatcher.record_success(session, job_id, attempt, result.result)
            elif outcome == "failure":
                await self.dispatcher.record_failure(
                    session,
                    job_id,
                    attempt,
                    clip_error(result.failure.message),
                    result.failure.retryable,
                )
            elif outcome == "cancelled":
                await self.dispatcher.record_cancelled(session, job_id, attempt)
            elif outcome == "released":
                await self.dispatcher.record_released(session, job_id, attempt)
            else:
                reason = "a result needs an outcome"
        except (ConcurrentModification, FailedPrecondition) as exc:
            reason = f"stale attempt: {exc.message}"
        except Unavailable:
            return  # no answer: the executor sends the result again, and it is recorded then
        except JobschedError as exc:
            reason = exc.message
        if reason:
            log.warning(
                "result refused",
                extra={
                    "fields": {
                        "event": "dispatch.result_refused",
                        "executor": session.name,
                        "job_id": job_id[:64],
                        "attempt": attempt,
                        "reason": reason,
                    }
                },
            )
        session.send(
            pb.ConnectResponse(
                result_ack=pb.ResultAck(attempt=result.attempt, accepted=not reason, reason=reason)
            )
        )
