"""Records the outcomes executors report for their attempts: successes (group-committed, see
successes.py), failures (retried after backoff, or DEAD), hand-backs and cancels, each guarded
by the attempt so that a stale report changes nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from scheduler.dispatch.messages import cancel_message
from scheduler.dispatch.reports import Reports
from scheduler.dispatch.sessions import ExecutorSession
from scheduler.dispatch.successes import SuccessWriter
from scheduler.dispatch.wakeups import WakeUps
from scheduler.domain.errors import ConcurrentModification, JobschedError, Unavailable
from scheduler.domain.jobs import JobRecord
from scheduler.domain.retry import after_failure
from scheduler.domain.states import JobState
from scheduler.store.attempts import Success, fail_attempt, release_attempt
from scheduler.store.database import Database
from scheduler.store.jobs import Guard, cancel_job
from scheduler.watch import JobWatchHub

log = logging.getLogger("jobsched.dispatch")
FORGOTTEN = "the executor no longer runs it"


class Outcomes:
    """`recorded(job, state)` is told of each outcome with the state it left the job in
    (SUCCEEDED, SCHEDULED for a retry, DEAD, CANCELLED): the metrics' and the spans' hook."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        reports: Reports,
        hub: JobWatchHub,
        wakeups: WakeUps,
        recorded: Callable[[JobRecord, JobState], None],
        max_releases: int,
    ) -> None:
        self.db = db
        self.clock = clock
        self.reports = reports
        self.hub = hub
        self.wakeups = wakeups
        self.recorded = recorded
        self.max_releases = max_releases
        self.successes = SuccessWriter(db, clock, reports, self._written, self.settle)

    async def start(self) -> None:
        await self.successes.start()

    async def stop(self) -> None:
        await self.successes.stop()

    def guard(self, session: ExecutorSession, job_id: str, attempt: int) -> Guard:
        job = session.running(job_id, attempt)
        if job is None:
            raise ConcurrentModification(f"attempt {attempt} of job {job_id} is not running here")
        return Guard(job.tenant, job.id, JobState.RUNNING, attempt)

    def finished(self, session: ExecutorSession, job_id: str) -> None:
        """The attempt left `session`: watchers are told, its credit is free."""
        self.hub.notify(job_id)
        session.leave(job_id)
        self.reports.forget(job_id)  # the outcome stored what it reported
        self.wakeups.credit_freed()

    def settle(self, session: ExecutorSession, job_id: str, exc: BaseException) -> None:
        """Recording an outcome failed. A lost race (stale attempt) or bad request settles it:
        the attempt leaves the session. An unavailable store (or an interrupted call) does
        not: the attempt stays in flight with its lease renewed, and the executor's re-sent
        result is recorded once the store is back."""
        if not isinstance(exc, Unavailable | asyncio.CancelledError):
            self.finished(session, job_id)

    async def record_success(
        self, session: ExecutorSession, job_id: str, attempt: int, result: bytes
    ) -> None:
        """Returns once this success is committed (see successes.py); raises
        ConcurrentModification when its attempt was stale."""
        self.guard(session, job_id, attempt)
        update = self.reports.last_progress(job_id, attempt)
        success = Success(
            job_id,
            attempt,
            result,
            f"executor:{session.name}",
            None if update is None else update.progress,
        )
        await self.successes.record(session, success)

    def _written(self, session: ExecutorSession, job_id: str, succeeded: bool) -> None:
        job = session.in_flight.get(job_id)
        if job is not None and succeeded:
            self.recorded(job, JobState.SUCCEEDED)
        self.finished(session, job_id)

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
        guard = self.guard(session, job_id, attempt)
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
            self.settle(session, job_id, exc)
            raise
        self.finished(session, job_id)
        self.recorded(job, outcome.state)
        if outcome.run_at is not None:
            self.wakeups.wake_at(outcome.run_at)  # the retry starts when its backoff ends

    async def record_released(self, session: ExecutorSession, job_id: str, attempt: int) -> None:
        """The executor gives the attempt back unfinished (it is shutting down): requeued at
        once, without burning an attempt."""
        guard = self.guard(session, job_id, attempt)
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
            self.settle(session, job_id, exc)
            raise
        self.finished(session, job_id)
        self.wakeups.new_work()

    async def record_cancelled(self, session: ExecutorSession, job_id: str, attempt: int) -> None:
        guard = self.guard(session, job_id, attempt)
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
            self.settle(session, job_id, exc)
            raise
        self.finished(session, job_id)
        self.recorded(job, JobState.CANCELLED)

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
