"""The dispatcher (a start/stop service): claims eligible jobs for connected executors with free
credits and pushes assignments to their streams. Its parts, each in a file of its own:
when a round runs (wakeups.py), which stream runs which attempt and what happens to the attempts
of a lost one (attachment.py), acknowledgements and heartbeats (liveness.py), the outcomes the
executors report (outcomes.py, with the group commit of successes in successes.py), and their
progress and log lines (reports.py). Promotion of due SCHEDULED jobs runs when the timer for the
earliest fires, and otherwise at most once per poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobsched.tracing import background_span
from scheduler.dispatch.attachment import Attachment, Detached
from scheduler.dispatch.liveness import Liveness
from scheduler.dispatch.messages import assignment, cancel_message, lease_end
from scheduler.dispatch.notify import Notifier
from scheduler.dispatch.outcomes import Outcomes
from scheduler.dispatch.reports import Reports
from scheduler.dispatch.sessions import ExecutorSession
from scheduler.dispatch.wakeups import WakeUps
from scheduler.domain.errors import JobschedError
from scheduler.domain.jobs import JobRecord, Progress
from scheduler.domain.states import JobState
from scheduler.store.attempts import (
    DEFAULT_MAX_RELEASES,
    DEFAULT_STARVATION_AFTER,
    any_queued,
    claim_jobs,
    promote_due_jobs,
)
from scheduler.store.database import Database
from scheduler.telemetry.job_spans import JobSpans
from scheduler.watch import JobWatchHub

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("jobsched.dispatch")
PROMOTE_BATCH = 1000


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
        self.ack_timeout = ack_timeout
        self.poll_interval = poll_interval
        self.starvation_after = starvation_after
        self.sessions: dict[str, ExecutorSession] = {}
        self.hub = hub or JobWatchHub()
        self.wakeups = WakeUps(clock, poll_interval, notifier)
        self._promoted_at = -math.inf  # time.monotonic() of the last promotion
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # dispatch rounds completed (for tests and benchmarks)
        # Told of each outcome recorded here, with the state it left the job in (SUCCEEDED,
        # SCHEDULED for a retry, DEAD, CANCELLED): the metrics' hook, set by the server.
        self.on_outcome: Callable[[JobRecord, JobState], None] | None = None
        # Metrics: attempts handed to an executor, and when (their queue wait).
        self.on_started: Callable[[list[JobRecord], datetime], None] | None = None
        self.notifier = notifier
        # Progress and log lines of the running attempts, written on a tick or with outcomes.
        self.reports = Reports(db, clock, self.hub, progress_interval)
        self.outcomes = Outcomes(
            db, clock, self.reports, self.hub, self.wakeups, self._outcome, max_releases
        )
        self.attachment = Attachment(
            db,
            clock,
            self.sessions,
            self.reports,
            self.hub,
            self.wakeups,
            self._outcome,
            lease=lease,
            reconnect_grace=reconnect_grace,
            max_releases=max_releases,
        )
        self.liveness = Liveness(
            db,
            clock,
            self.sessions,
            self.outcomes,
            self.wakeups,
            lease=lease,
            lease_renew_within=lease_renew_within,
            heartbeat_timeout=heartbeat_timeout,
            max_releases=max_releases,
        )
        # What the executor service and the server call, handed on to the parts.
        self.add = self.attachment.add
        self.reattach = self.attachment.reattach
        self.remove = self.attachment.remove
        self.acknowledge = self.liveness.acknowledge
        self.heartbeat = self.liveness.heartbeat
        self.record_success = self.outcomes.record_success
        self.record_failure = self.outcomes.record_failure
        self.record_released = self.outcomes.record_released
        self.record_cancelled = self.outcomes.record_cancelled
        self.wake = self.wakeups.wake
        self.new_work = self.wakeups.new_work
        self.promote_soon = self.wakeups.promote_soon
        self.wake_at = self.wakeups.wake_at
        if notifier is not None:
            notifier.on_work = self.wake
            notifier.on_scheduled = self.promote_soon
            notifier.on_cancel = self.forward_cancel

    @property
    def detached(self) -> dict[str, Detached]:
        return self.attachment.detached

    @property
    def heartbeats(self) -> int:
        return self.liveness.heartbeats

    @property
    def has_peers(self) -> Callable[[], bool]:
        return self.wakeups.has_peers

    @has_peers.setter
    def has_peers(self, has_peers: Callable[[], bool]) -> None:
        self.wakeups.has_peers = has_peers

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.notifier is not None:
            await self.notifier.start()
        self._task = asyncio.create_task(self._run(), name="dispatcher")
        await self.reports.start()
        await self.outcomes.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.outcomes.stop()
        if self.notifier is not None:
            await self.notifier.stop()
        await self.reports.stop()
        for session in list(self.sessions.values()):
            session.close()

    # --- cancels -----------------------------------------------------------------------------

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
            woken = await self.wakeups.wait()
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
        self.wakeups.deadline_at = None
        await self.liveness.revert_unacknowledged(now)
        if self.attachment.detached:
            await self.attachment.expire_detached(now)
        for session in self.sessions.values():
            for deadline in session.unacked.values():
                self.wakeups.note_deadline(deadline, now)
        self.attachment.note_deadlines(now)
        # Promotion runs at the poll's cadence or the timer's, not on every wake-up: a submit
        # must not pay for a scan of scheduled jobs.
        promoted = 0
        if self.wakeups.timer_due() or time.monotonic() - self._promoted_at >= self.poll_interval:
            promoted = await self.promote(now)
        if polled and not promoted and any(s.credits for s in self.sessions.values()):
            async with self.db.read() as conn:
                if not await any_queued(conn):
                    return 0
        return await self._claim_for_sessions()

    async def _claim_for_sessions(self) -> int:
        """Claim for each session with credits, up to that many jobs, and send them."""
        handed_out = 0
        # Filters (job types, queues) whose claim this round found fewer jobs than it asked
        # for: the other sessions with the same filters would find none either (work that comes
        # meanwhile wakes the next round). A thousand idle executors cost one claim, not 1,000.
        drained: set[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...] | None]] = set()
        for session in list(self.sessions.values()):
            credits = session.credits
            filters = (session.job_types, session.queues, session.tenants)
            if credits == 0 or filters in drained:
                continue
            avoid = self.liveness.reverts.avoid_for(session, self.sessions.values())
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
        them like the other attempts of a lost stream (see attachment.py)."""
        if session.closed:
            self.attachment.detach_claimed(session, jobs, now)
            return
        ack_by = now + self.ack_timeout
        self.wakeups.note_deadline(ack_by, now)
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
        self.wakeups.due_at = None
        async with self.db.read() as conn:  # one statement: autocommit, no BEGIN/COMMIT
            promotion = await promote_due_jobs(conn, now, limit=PROMOTE_BATCH)
        if promotion.promoted:
            self.new_work()
            for job_id in promotion.job_ids:
                self.hub.notify(job_id)
        if promotion.promoted >= PROMOTE_BATCH:
            self.wakeups.due_at = time.monotonic()  # more are due: go on at once
        elif promotion.next_run_at is not None:
            self.wake_at(promotion.next_run_at)
        return promotion.promoted

    # --- reports -----------------------------------------------------------------------------

    def record_progress(
        self, session: ExecutorSession, job_id: str, attempt: int, progress: Progress
    ) -> None:
        """The latest progress of an attempt in flight on this stream (others are dropped)."""
        if session.running(job_id, attempt) is not None:
            self.reports.progress(job_id, attempt, progress)
        else:
            session.refuse("progress", job_id, attempt)

    def record_logs(
        self,
        session: ExecutorSession,
        job_id: str,
        attempt: int,
        first_line_number: int,
        lines: Sequence[str],
    ) -> None:
        """Buffer the lines of an attempt in flight on this stream (others are dropped)."""
        if session.running(job_id, attempt) is not None:
            self.reports.lines(job_id, attempt, first_line_number, lines)
        else:
            session.refuse("log", job_id, attempt)

    async def flush_progress(self) -> int:
        """Write the buffered progress and log lines now (see Reports.flush)."""
        return await self.reports.flush()
