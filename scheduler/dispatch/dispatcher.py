"""The dispatcher (a start/stop service): claims eligible jobs for connected executors with free
credits and pushes assignments to their streams, and records the outcomes they report.

Wake-ups: `wake()` (a local submit, a freed credit, a new executor), `new_work()` (the same, and
a debounced NOTIFY so the other replicas' dispatchers wake too), an in-memory timer at the run_at
of the next SCHEDULED job (`wake_at`, also fed by every promotion's look-ahead), and a slow safety
poll. Promotion of due SCHEDULED jobs runs when that timer fires, and otherwise at most once per
poll interval.

A lost executor stream is not failed at once: its attempts are detached for `reconnect_grace`, and
an executor that reconnects (here or on another replica) within it re-attaches them with their
leases renewed. After the grace, acknowledged attempts fail as retryable ("executor
disconnected": retried with attempt + 1 after backoff) and unacknowledged ones are released
without burning an attempt, both guarded so that a job whose executor came back is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from jobsched.tracing import background_span
from jobsched.v1 import executor_service_pb2 as pb
from scheduler.dispatch.notify import Notifier
from scheduler.dispatch.reports import AttemptKey, BufferedLines, Reports, log_lines
from scheduler.dispatch.reverts import RecentReverts
from scheduler.dispatch.sessions import ExecutorSession
from scheduler.dispatch.watchdog import forgotten
from scheduler.domain.errors import ConcurrentModification, JobschedError, Unavailable
from scheduler.domain.jobs import JobRecord, Progress
from scheduler.domain.retry import after_failure
from scheduler.domain.states import JobState
from scheduler.store.attempts import (
    DEFAULT_MAX_RELEASES,
    DEFAULT_STARVATION_AFTER,
    LostStream,
    Success,
    any_queued,
    claim_jobs,
    fail_attempt,
    promote_due_jobs,
    reattach_attempts,
    release_attempt,
    renew_leases,
    succeed_attempts,
)
from scheduler.store.database import Database
from scheduler.store.jobs import Guard, cancel_job
from scheduler.store.logs import insert_log_lines
from scheduler.telemetry.job_spans import JobSpans
from scheduler.watch import JobWatchHub

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("jobsched.dispatch")
PROMOTE_BATCH = 1000
FORGOTTEN = "the executor no longer runs it"
_BATCH_RETRIES = 3  # runs of a batch of successes that lost a deadlock
# A deadline round runs this long after the deadline, so that the clock has passed it.
_DEADLINE_SLACK = 0.01


def _attempt(job: JobRecord) -> pb.JobAttempt:
    return pb.JobAttempt(job_id=job.id, attempt=job.attempt)


def cancel_message(job_id: str, attempt: int, reason: str) -> pb.ConnectResponse:
    return pb.ConnectResponse(
        cancel=pb.CancelAssignment(
            attempt=pb.JobAttempt(job_id=job_id, attempt=attempt), reason=reason
        )
    )


@dataclass(frozen=True, slots=True)
class _PendingSuccess:
    session: ExecutorSession
    success: Success
    done: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class Detached:
    """An attempt of a lost stream, waiting `reconnect_grace` for its executor to come back."""

    job: JobRecord
    executor: str
    acknowledged: bool
    lost_at: datetime
    deadline: datetime


def lease_end(lease: timedelta, now: datetime) -> Timestamp:
    """The lease_expire_time of the assignments of a claim made at `now` (one for them all)."""
    expires = Timestamp()
    expires.FromDatetime(now + lease)
    return expires


def assignment(job: JobRecord, expires: Timestamp) -> pb.ConnectResponse:
    message = pb.Assignment(
        attempt=_attempt(job),
        type=job.type,
        queue=job.queue,
        payload=job.payload,
        labels=job.labels,
        lease_expire_time=expires,
        tenant=job.tenant,
        traceparent=job.trace_context or "",
    )
    if job.timeout is not None:
        timeout = Duration()
        timeout.FromTimedelta(job.timeout)
        message.timeout.CopyFrom(timeout)
    return pb.ConnectResponse(assignment=message)


class Dispatcher:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        *,
        lease: timedelta = timedelta(seconds=30),
        ack_timeout: timedelta = timedelta(seconds=10),
        poll_interval: float = 1.0,
        progress_interval: float = 0.5,
        hub: JobWatchHub | None = None,
        reconnect_grace: timedelta = timedelta(seconds=10),
        starvation_after: timedelta = DEFAULT_STARVATION_AFTER,
        notifier: Notifier | None = None,
        lease_renew_within: timedelta | None = None,
        max_releases: int = DEFAULT_MAX_RELEASES,
        heartbeat_timeout: timedelta = timedelta(seconds=12),
        tracer: Tracer | None = None,
    ) -> None:
        self.db = db
        # Spans (with tracing on only): claims, and the queue wait and outcome of traced jobs.
        self.tracer = tracer
        self.job_spans = JobSpans(tracer) if tracer is not None else None
        self.clock = clock
        self.lease = lease
        # A heartbeat renews the leases that end within this (None: every lease, every time).
        self.lease_renew_within = lease_renew_within
        self.ack_timeout = ack_timeout
        # Hand-backs without running, per job, before the next one ends it DEAD.
        self.max_releases = max_releases
        # An acknowledged attempt missing from its executor's heartbeats this long is failed.
        self.heartbeat_timeout = heartbeat_timeout.total_seconds()
        # Jobs each executor failed to acknowledge: claimed for others first.
        self.reverts = RecentReverts()
        self.poll_interval = poll_interval
        self.sessions: dict[str, ExecutorSession] = {}
        self.hub = hub or JobWatchHub()
        self._wake = asyncio.Event()
        self._promoted_at = -math.inf  # time.monotonic() of the last promotion
        self._task: asyncio.Task[None] | None = None
        self._successes: list[_PendingSuccess] = []
        self._successes_ready = asyncio.Event()
        self._success_task: asyncio.Task[None] | None = None
        self.reconnect_grace = reconnect_grace
        self.starvation_after = starvation_after
        self.detached: dict[str, Detached] = {}  # job id -> attempt of a lost stream
        self._due_at: float | None = None  # time.monotonic() when the next SCHEDULED job is due
        # time.monotonic() of the earliest ack deadline or reconnect grace: a round then
        # reverts or moves on what is due, without waiting for the safety poll.
        self._deadline_at: float | None = None
        self.rounds = 0  # dispatch rounds completed (for tests and benchmarks)
        self.heartbeats = 0  # executor heartbeats handled (for tests)
        # Whether other replicas are alive (set by the server from ReplicaPresence).
        self.has_peers: Callable[[], bool] = lambda: False
        # Told of each outcome recorded here, with the state it left the job in (SUCCEEDED,
        # SCHEDULED for a retry, DEAD, CANCELLED): the metrics' hook, set by the server.
        self.on_outcome: Callable[[JobRecord, JobState], None] | None = None
        # Metrics: attempts handed to an executor, and when (their queue wait).
        self.on_started: Callable[[list[JobRecord], datetime], None] | None = None
        self.notifier = notifier
        if notifier is not None:
            notifier.on_work = self.wake
            notifier.on_scheduled = self.promote_soon
            notifier.on_cancel = self.forward_cancel
        # Progress and log lines of the running attempts, written on a tick or with outcomes.
        self.reports = Reports(db, clock, self.hub, progress_interval)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.notifier is not None:
            await self.notifier.start()
        self._task = asyncio.create_task(self._run(), name="dispatcher")
        await self.reports.start()
        self._success_task = asyncio.create_task(self._write_successes(), name="success-writer")

    async def stop(self) -> None:
        for task in (self._task, self._success_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._success_task = None
        # Successes not written: not acknowledged, so their executors send them again.
        pending, self._successes = self._successes, []
        for item in pending:
            if not item.done.done():
                item.done.set_exception(Unavailable("the scheduler is stopping"))
        if self.notifier is not None:
            await self.notifier.stop()
        await self.reports.stop()
        for session in list(self.sessions.values()):
            session.close()

    def wake(self) -> None:
        self._wake.set()

    def new_work(self) -> None:
        """Jobs became QUEUED here: wake this dispatcher and, debounced, the other replicas'."""
        self.wake()
        if self.notifier is not None:
            self.notifier.work()

    def promote_soon(self) -> None:
        """SCHEDULED jobs appeared that no timer here knows of (the dependency trigger, on any
        replica): promote at the next round, which sets the timer for the earliest."""
        self._due_at = time.monotonic()
        self.wake()

    def _note_deadline(self, deadline: datetime, now: datetime) -> None:
        """Make sure a round runs just after `deadline` (an ack timeout, a reconnect grace)."""
        at = time.monotonic() + max(0.0, (deadline - now).total_seconds()) + _DEADLINE_SLACK
        if self._deadline_at is None or at < self._deadline_at:
            self._deadline_at = at

    def wake_at(self, when: datetime) -> None:
        """Promote and dispatch at `when` (the run_at of a SCHEDULED job), without polling."""
        delay = max(0.0, (when - self.clock()).total_seconds())
        due = time.monotonic() + delay
        if self._due_at is None or due < self._due_at:
            self._due_at = due
            self.wake()  # the loop recomputes how long to sleep

    # --- sessions ----------------------------------------------------------------------------

    def add(self, session: ExecutorSession) -> ExecutorSession | None:
        """Serve `session`; returns the session of that name it replaces (closed), if any: the
        caller hands that one's attempts to `remove`."""
        previous = self.sessions.get(session.name)
        if previous is not None:
            previous.close()  # a reconnect replaces the old stream
        self.sessions[session.name] = session
        self.wake()
        return previous

    async def reattach(self, session: ExecutorSession, attempts: list[tuple[str, int]]) -> None:
        """A reconnecting executor still holds `attempts`: those that are still its own (RUNNING,
        same attempt, same executor) continue on this stream with their leases renewed; it is
        told to stop the others, which were moved on meanwhile (their results would be
        rejected)."""
        if not attempts:
            return
        async with self.db.transaction() as conn:
            jobs = await reattach_attempts(
                conn, session.name, attempts, self.lease, self.clock(), session.tenants
            )
        kept = {(job.id, job.attempt) for job in jobs}
        for job in jobs:
            self.detached.pop(job.id, None)
            session.in_flight[job.id] = job
            if job.cancel_requested:
                session.send(cancel_message(job.id, job.attempt, "cancelled"))
        for job_id, attempt in attempts:
            if (job_id, attempt) not in kept:
                session.send(
                    cancel_message(job_id, attempt, "the attempt is no longer assigned to you")
                )
        log.info(
            "executor re-attached",
            extra={
                "fields": {
                    "event": "dispatch.reattached",
                    "executor": session.name,
                    "kept": len(kept),
                    "refused": len(attempts) - len(kept),
                }
            },
        )

    async def remove(self, session: ExecutorSession) -> None:
        """The stream ended: its unfinished attempts wait `reconnect_grace` for the executor to
        re-attach them before they are failed (or, never acknowledged, released)."""
        session.close()
        if self.sessions.get(session.name) is session:
            del self.sessions[session.name]
        if session.dropped_reports > 1:
            log.warning(
                "reports for attempts not running on the stream refused",
                extra={
                    "fields": {
                        "event": "dispatch.reports_dropped",
                        "executor": session.name,
                        "count": session.dropped_reports,
                    }
                },
            )
        now = self.clock()
        current = self.sessions.get(session.name)
        for job in session.in_flight.values():
            if current is not None and job.id in current.in_flight:
                continue  # already re-attached by the executor's new stream
            self._detach(job, session.name, job.id not in session.unacked, now)
        session.in_flight.clear()
        session.recording.clear()
        session.unacked.clear()
        session.missing.clear()
        session.results_at.clear()
        if self.detached:
            self._note_deadline(now + self.reconnect_grace, now)
            self.wake()  # the loop recomputes how long to sleep

    def _detach(self, job: JobRecord, executor: str, acknowledged: bool, now: datetime) -> None:
        """Hold an attempt of a lost stream for `reconnect_grace` (see the module docstring)."""
        self.detached[job.id] = Detached(
            job=job,
            executor=executor,
            acknowledged=acknowledged,
            lost_at=now,
            deadline=now + self.reconnect_grace,
        )

    async def expire_detached(self, now: datetime) -> int:
        """Attempts whose stream was lost more than `reconnect_grace` ago move on."""
        moved = 0
        for job_id, detached in list(self.detached.items()):
            if detached.deadline > now:
                continue
            del self.detached[job_id]
            job = detached.job
            guard = Guard(job.tenant, job.id, JobState.RUNNING, job.attempt)
            # Not renewed since the stream was lost: nobody re-attached it anywhere.
            lost = LostStream(detached.executor, detached.lost_at + self.lease)
            try:
                async with self.db.transaction() as conn:
                    if detached.acknowledged:
                        outcome = after_failure(
                            attempt=job.attempt,
                            max_attempts=job.max_attempts,
                            retryable=True,
                            now=now,
                            policy=job.retry_policy,
                        )
                        await fail_attempt(
                            conn, guard, outcome, "executor disconnected", now, "scheduler", lost
                        )
                        if outcome.run_at is not None:
                            self.wake_at(outcome.run_at)
                        self._outcome(job, outcome.state)
                    else:
                        await release_attempt(
                            conn,
                            guard,
                            now,
                            "executor disconnected before acknowledging",
                            "scheduler",
                            lost,
                            self.max_releases,
                        )
                        self.new_work()
                moved += 1
            except ConcurrentModification:
                pass  # finished, re-attached or rescued meanwhile
            self.reports.forget(job_id)  # its executor's stream is gone: no outcome will store it
            self.hub.notify(job_id)
        return moved

    def request_cancel(self, job: JobRecord) -> None:
        """Forward a client's cancel to the executor running the job: at once if it is connected
        here, else through the other replicas (NOTIFY), and in any case at its next heartbeat."""
        if not self.forward_cancel(job.id) and self.notifier is not None:
            self.notifier.cancel(job.id)

    def forward_cancel(self, job_id: str, reason: str = "cancelled") -> bool:
        """Send CancelAssignment to the local stream running `job_id`; False if there is none."""
        for session in self.sessions.values():
            running = session.in_flight.get(job_id)
            if running is not None:
                session.send(cancel_message(job_id, running.attempt, reason))
                return True
        return False

    def stop_attempt(self, job_id: str, reason: str) -> None:
        """The attempt was moved on without its executor (rescued): tell the executor to stop
        it, wherever it is connected (its result would be stale anyway)."""
        if not self.forward_cancel(job_id, reason) and self.notifier is not None:
            self.notifier.cancel(job_id)

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)  # the store is failing: do not spin on wake-ups
            timeout = self.poll_interval
            for at in (self._due_at, self._deadline_at):
                if at is not None:
                    timeout = min(timeout, max(0.0, at - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                await self.dispatch_once(polled=not woken)
                self.rounds += 1
                backoff = 0.0
            except JobschedError as exc:
                backoff = min(self.poll_interval, max(0.05, backoff * 2))
                log.warning("dispatch failed", extra={"fields": {"error": str(exc)}})

    async def dispatch_once(self, *, polled: bool = False) -> int:
        """Revert unacknowledged assignments, move on the attempts of streams lost beyond
        their grace, promote due jobs (when the timer says one is due, else at most once per
        poll interval), then give every session with credits up to that many jobs.

        `polled`: nothing woke this round, the safety poll did. Then the claims (a transaction
        per session with credits) are made only if some job is QUEUED, which one statement
        tells: idle executors cost nothing per poll."""
        now = self.clock()
        self._deadline_at = None
        await self.revert_unacknowledged(now)
        if self.detached:
            await self.expire_detached(now)
        for session in self.sessions.values():
            for deadline in session.unacked.values():
                self._note_deadline(deadline, now)
        for detached in self.detached.values():
            self._note_deadline(detached.deadline, now)
        # Promotion runs at the poll's cadence or the timer's, not on every wake-up: a submit
        # must not pay for a scan of scheduled jobs.
        monotonic = time.monotonic()
        timer_due = self._due_at is not None and monotonic >= self._due_at
        promoted = 0
        if timer_due or monotonic - self._promoted_at >= self.poll_interval:
            promoted = await self.promote(now)
        handed_out = 0
        if polled and not promoted and any(s.credits for s in self.sessions.values()):
            async with self.db.read() as conn:
                if not await any_queued(conn):
                    return 0
        # Filters (job types, queues) whose claim this round found fewer jobs than it asked
        # for: the other sessions with the same filters would find none either (work that comes
        # meanwhile wakes the next round). A thousand idle executors cost one claim, not 1,000.
        drained: set[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...] | None]] = set()
        for session in list(self.sessions.values()):
            credits = session.credits
            filters = (session.job_types, session.queues, session.tenants)
            if credits == 0 or filters in drained:
                continue
            avoid = self.reverts.avoid_for(session, self.sessions.values())
            # Read the clock again: the round's start may be a while ago (a promotion, earlier
            # claims), and a job submitted since must be eligible (run_at <= now) like the rest.
            now = self.clock()
            with background_span(
                self.tracer, "jobsched.claim", **{"jobsched.executor": session.name}
            ) as span:
                async with self.db.transaction() as conn:
                    jobs = await claim_jobs(
                        conn,
                        executor=session.name,
                        job_types=session.job_types,
                        queues=session.queues,
                        tenants=session.tenants,
                        limit=credits,
                        lease=self.lease,
                        now=now,
                        starvation_after=self.starvation_after,
                        avoid=avoid,
                    )
                if span is not None:
                    span.set_attributes({"jobsched.limit": credits, "jobsched.claimed": len(jobs)})
            if len(jobs) < credits and not avoid:  # with exclusions, others may find more
                drained.add(filters)
            if jobs:
                self._hand_out(session, jobs, now)
            handed_out += len(jobs)
        return handed_out

    def _hand_out(self, session: ExecutorSession, jobs: list[JobRecord], now: datetime) -> None:
        """Send claimed jobs to their executor; when its stream ended during the claim, hold
        them for `reconnect_grace` like the other attempts of a lost stream (never
        acknowledged: released then, without burning an attempt)."""
        if session.closed:
            for job in jobs:
                self._detach(job, session.name, False, now)
                self.hub.notify(job.id)
            self._note_deadline(now + self.reconnect_grace, now)
            return
        ack_by = now + self.ack_timeout
        self._note_deadline(ack_by, now)
        expires = lease_end(self.lease, now)
        for job in jobs:
            session.in_flight[job.id] = job
            session.unacked[job.id] = ack_by
            session.send(assignment(job, expires))
            self.hub.notify(job.id)
            if self.job_spans is not None:
                self.job_spans.queue_wait(job, session.name, now)
        if self.on_started is not None:
            self.on_started(jobs, now)

    def _outcome(self, job: JobRecord, state: JobState) -> None:
        """An attempt's outcome was recorded (the metrics' and the spans' hooks)."""
        if self.on_outcome is not None:
            self.on_outcome(job, state)
        if self.job_spans is not None:
            self.job_spans.recorded(job, state)

    async def promote(self, now: datetime) -> int:
        """SCHEDULED jobs whose run_at has come become QUEUED; the timer is set for the next."""
        self._promoted_at = time.monotonic()
        self._due_at = None
        async with self.db.read() as conn:  # one statement: autocommit, no BEGIN/COMMIT
            promotion = await promote_due_jobs(conn, now, limit=PROMOTE_BATCH)
        if promotion.promoted:
            self.new_work()
            for job_id in promotion.job_ids:
                self.hub.notify(job_id)
        if promotion.promoted >= PROMOTE_BATCH:
            self._due_at = time.monotonic()  # more are due: go on at once
        elif promotion.next_run_at is not None:
            self.wake_at(promotion.next_run_at)
        return promotion.promoted

    def record_progress(
        self, session: ExecutorSession, job_id: str, attempt: int, progress: Progress
    ) -> None:
        """The latest progress of an attempt in flight on this stream (others are dropped)."""
        job = session.in_flight.get(job_id)
        if job is not None and job.attempt == attempt:
            self.reports.progress(job_id, attempt, progress)
        else:
            _dropped(session, "progress", job_id, attempt)

    def record_logs(
        self,
        session: ExecutorSession,
        job_id: str,
        attempt: int,
        first_line_number: int,
        lines: Sequence[str],
    ) -> None:
        """Buffer the lines of an attempt in flight on this stream (others are dropped)."""
        job = session.in_flight.get(job_id)
        if job is not None and job.attempt == attempt:
            self.reports.lines(job_id, attempt, first_line_number, lines)
        else:
            _dropped(session, "log", job_id, attempt)

    async def flush_progress(self) -> int:
        """Write the buffered progress and log lines now (see Reports.flush)."""
        return await self.reports.flush()

    def acknowledge(self, session: ExecutorSession, job_id: str, attempt: int) -> None:
        job = session.in_flight.get(job_id)
        if job is not None and job.attempt == attempt:
            session.unacked.pop(job_id, None)
        else:
            _dropped(session, "ack", job_id, attempt)

    async def revert_unacknowledged(self, now: datetime) -> int:
        """Assignments not acknowledged in time go back to QUEUED (attempt handed back)."""
        reverted = 0
        for session in list(self.sessions.values()):
            for job_id, deadline in list(session.unacked.items()):
                if deadline > now:
                    continue
                job = session.in_flight[job_id]
                guard = self._guard(session, job_id, job.attempt)
                with contextlib.suppress(ConcurrentModification):
                    async with self.db.transaction() as conn:
                        released = await release_attempt(
                            conn,
                            guard,
                            now,
                            "assignment not acknowledged",
                            "scheduler",
                            max_releases=self.max_releases,
                        )
                    reverted += 1
                    if released.state is JobState.QUEUED:
                        # Offered to the others first (see scheduler/dispatch/reverts.py).
                        self.reverts.note(session.name, job_id, job.type, job.queue)
                self._finished(session, job_id)
        return reverted

    async def heartbeat(
        self, session: ExecutorSession, running: Sequence[tuple[str, int]] = ()
    ) -> None:
        """The executor is alive (a silent session gets credits again) and runs `running`:
        fail the attempts it no longer runs (see watchdog.forgotten), renew the leases of its
        running attempts that run low (one statement), and forward the cancels requested
        meanwhile for any of them (through any replica)."""
        self.heartbeats += 1
        was_silent = session.silent
        session.heard_at = time.monotonic()
        if was_silent:
            self.wake()  # it has credits again
        if not session.in_flight:
            session.missing.clear()
            return
        listed = {
            job_id
            for job_id, attempt in running
            if (job := session.in_flight.get(job_id)) is not None and job.attempt == attempt
        }
        for job_id in forgotten(session, listed, session.heard_at, self.heartbeat_timeout):
            with contextlib.suppress(ConcurrentModification):
                await self.fail_forgotten(session, job_id)
        if not session.in_flight:
            return
        async with self.db.transaction() as conn:
            cancelling = await renew_leases(
                conn,
                session.name,
                list(session.in_flight),
                self.lease,
                self.clock(),
                self.lease_renew_within,
            )
        for job_id, attempt in cancelling:
            held = session.in_flight.get(job_id)
            if held is not None and held.attempt == attempt:
                session.send(cancel_message(job_id, attempt, "cancelled"))

    # --- outcomes ----------------------------------------------------------------------------

    def _guard(self, session: ExecutorSession, job_id: str, attempt: int) -> Guard:
        job = session.in_flight.get(job_id)
        if job is None or job.attempt != attempt:
            raise ConcurrentModification(f"attempt {attempt} of job {job_id} is not running here")
        return Guard(job.tenant, job.id, JobState.RUNNING, attempt)

    def _finished(self, session: ExecutorSession, job_id: str) -> None:
        self.hub.notify(job_id)
        session.in_flight.pop(job_id, None)
        session.recording.discard(job_id)  # never counted once it left in_flight
        session.unacked.pop(job_id, None)
        session.missing.pop(job_id, None)
        session.results_at.pop(job_id, None)
        self.reports.forget(job_id)  # the outcome stored what it reported
        self.wake()  # a credit is free
        # A running job fewer: a limited queue may take one more, also through executors of
        # the other replicas (debounced; only while there are any).
        if self.notifier is not None and self.has_peers():
            self.notifier.work()

    def _settle(self, session: ExecutorSession, job_id: str, exc: BaseException) -> None:
        """Recording an outcome failed. A lost race (stale attempt) or bad request settles it:
        the attempt leaves the session. An unavailable store (or an interrupted call) does
        not: the attempt stays in flight with its lease renewed, and the executor's re-sent
        result is recorded once the store is back."""
        if not isinstance(exc, Unavailable | asyncio.CancelledError):
            self._finished(session, job_id)

    async def record_success(
        self, session: ExecutorSession, job_id: str, attempt: int, result: bytes
    ) -> None:
        """Record a success. Successes are written in batches (group commit): the ones that
        arrive while a batch is being written go together in the next transaction, one
        statement for all, so a busy scheduler commits far less than once per job. Returns once
        this one is committed; raises ConcurrentModification when its attempt was stale."""
        self._guard(session, job_id, attempt)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        update = self.reports.last_progress(job_id, attempt)
        success = Success(
            job_id,
            attempt,
            result,
            f"executor:{session.name}",
            None if update is None else update.progress,
        )
        self._successes.append(_PendingSuccess(session, success, done))
        self._successes_ready.set()
        await done

    async def _write_successes(self) -> None:
        while True:
            await self._successes_ready.wait()
            self._successes_ready.clear()
            batch, self._successes = self._successes, []
            if batch:
                await self._write_success_batch(batch)

    async def _write_success_batch(self, batch: list[_PendingSuccess]) -> None:
        logs: dict[AttemptKey, BufferedLines] = {}
        for pending in batch:
            logs.update(
                await self.reports.take_logs(pending.success.job_id, pending.success.attempt)
            )
        try:
            for remaining in range(_BATCH_RETRIES, 0, -1):
                try:
                    async with self.db.transaction() as conn:
                        # The attempts' last lines commit with their outcomes: watchers see
                        # them first.
                        await insert_log_lines(conn, log_lines(logs))
                        successes = [p.success for p in batch]
                        succeeded = await succeed_attempts(conn, successes, self.clock())
                    break
                except ConcurrentModification as lost:
                    # A deadlock or serialization failure (a stale attempt is not an error
                    # here): the whole batch was rolled back, so run it again; if it keeps
                    # losing, leave it unanswered like an outage: the executors re-send.
                    if remaining == 1:
                        raise Unavailable(f"outcomes not recorded: {lost.message}") from lost
        except (JobschedError, asyncio.CancelledError) as exc:
            self.reports.restore_logs(logs)
            for pending in batch:
                self._settle(pending.session, pending.success.job_id, exc)
                if not pending.done.done():
                    pending.done.set_exception(
                        exc if isinstance(exc, JobschedError) else Unavailable("stopping")
                    )
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for pending in batch:
            job_id = pending.success.job_id
            job = pending.session.in_flight.get(job_id)
            if job is not None and job_id in succeeded:
                self._outcome(job, JobState.SUCCEEDED)
            self._finished(pending.session, job_id)
            if pending.done.done():
                continue
            if job_id in succeeded:
                pending.done.set_result(None)
            else:
                pending.done.set_exception(
                    ConcurrentModification(
                        f"attempt {pending.success.attempt} of job {job_id} is not running"
                    )
                )

    async def record_failure(
        self,
        session: ExecutorSession,
        job_id: str,
        attempt: int,
        error: str,
        retryable: bool,
        actor: str | None = None,
    ) -> None:
        """Record a failure (retried after backoff, or DEAD); `actor` defaults to the
        executor."""
        actor = actor or f"executor:{session.name}"
        guard = self._guard(session, job_id, attempt)
        job = session.in_flight[job_id]
        now = self.clock()
        outcome = after_failure(
            attempt=attempt,
            max_attempts=job.max_attempts,
            retryable=retryable,
            now=now,
            policy=job.retry_policy,
        )
        logs = await self.reports.take_logs(job_id, attempt)
        try:
            async with self.db.transaction() as conn:
                await self.reports.write_for_outcome(conn, job_id, attempt, logs)
                await fail_attempt(conn, guard, outcome, error, now, actor)
        except (JobschedError, asyncio.CancelledError) as exc:
            self.reports.restore_logs(logs)
            self._settle(session, job_id, exc)
            raise
        self._finished(session, job_id)
        self._outcome(job, outcome.state)
        if outcome.run_at is not None:
            self.wake_at(outcome.run_at)  # the retry starts when its backoff ends

    async def record_released(self, session: ExecutorSession, job_id: str, attempt: int) -> None:
        """The executor gives the attempt back unfinished (it is shutting down): requeued at
        once, without burning an attempt."""
        guard = self._guard(session, job_id, attempt)
        try:
            async with self.db.transaction() as conn:
                await release_attempt(
                    conn,
                    guard,
                    self.clock(),
                    "released by its executor (shutting down)",
                    f"executor:{session.name}",
                    max_releases=self.max_releases,
                )
        except (JobschedError, asyncio.CancelledError) as exc:
            self._settle(session, job_id, exc)
            raise
        self._finished(session, job_id)
        self.new_work()

    async def record_cancelled(self, session: ExecutorSession, job_id: str, attempt: int) -> None:
        guard = self._guard(session, job_id, attempt)
        job = session.in_flight[job_id]
        logs = await self.reports.take_logs(job_id, attempt)
        try:
            async with self.db.transaction() as conn:
                await self.reports.write_for_outcome(conn, job_id, attempt, logs)
                await cancel_job(
                    conn, guard, self.clock(), "cancelled by client", f"executor:{session.name}"
                )
        except (JobschedError, asyncio.CancelledError) as exc:
            self.reports.restore_logs(logs)
            self._settle(session, job_id, exc)
            raise
        self._finished(session, job_id)
        self._outcome(job, JobState.CANCELLED)

    async def fail_forgotten(self, session: ExecutorSession, job_id: str) -> None:
        """The executor no longer runs this acknowledged attempt (its heartbeats leave it out):
        fail it as retryable and tell the executor to stop it, in case it still does."""
        attempt = session.in_flight[job_id].attempt
        log.warning(
            "attempt missing from the executor's heartbeats",
            extra={
                "fields": {
                    "event": "dispatch.attempt_forgotten",
                    "executor": session.name,
                    "job_id": job_id,
                    "attempt": attempt,
                }
            },
        )
        await self.record_failure(
            session, job_id, attempt, FORGOTTEN, retryable=True, actor="scheduler"
        )
        session.send(cancel_message(job_id, attempt, FORGOTTEN))


def _dropped(session: ExecutorSession, kind: str, job_id: str, attempt: int) -> None:
    """An ack, progress or log report for an attempt not in flight on this stream: dropped;
    the first of a stream is logged (and their count when it ends, see Dispatcher.remove)."""
    session.dropped_reports += 1
    if session.dropped_reports == 1:
        log.warning(
            "report for an attempt not running on the stream refused",
            extra={
                "fields": {
                    "event": "dispatch.report_dropped",
                    "executor": session.name,
                    "kind": kind,
                    "job_id": job_id[:64],
                    "attempt": attempt,
                }
            },
        )
