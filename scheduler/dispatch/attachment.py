"""Which stream runs which attempt: executors attach (register, or reconnect and re-attach the
attempts they still hold) and detach (their stream ends).

A lost executor stream is not failed at once: its attempts are detached for `reconnect_grace`,
and an executor that reconnects (here or on another replica) within it re-attaches them with
their leases renewed. After the grace, acknowledged attempts fail as retryable ("executor
disconnected": retried with attempt + 1 after backoff) and unacknowledged ones are released
without burning an attempt, both guarded so that a job whose executor came back is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.dispatch.messages import cancel_message
from scheduler.dispatch.reports import Reports
from scheduler.dispatch.sessions import ExecutorSession
from scheduler.dispatch.wakeups import WakeUps
from scheduler.domain.errors import ConcurrentModification
from scheduler.domain.jobs import JobRecord
from scheduler.domain.retry import after_failure
from scheduler.domain.states import JobState
from scheduler.store.attempts import LostStream, fail_attempt, reattach_attempts, release_attempt
from scheduler.store.database import Database
from scheduler.store.jobs import Guard
from scheduler.watch import JobWatchHub

log = logging.getLogger("jobsched.dispatch")


@dataclass(frozen=True, slots=True)
class Detached:
    """An attempt of a lost stream, waiting `reconnect_grace` for its executor to come back."""

    job: JobRecord
    executor: str
    acknowledged: bool
    lost_at: datetime
    deadline: datetime


class Attachment:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        sessions: dict[str, ExecutorSession],
        reports: Reports,
        hub: JobWatchHub,
        wakeups: WakeUps,
        recorded: Callable[[JobRecord, JobState], None],
        *,
        lease: timedelta,
        reconnect_grace: timedelta,
        max_releases: int,
    ) -> None:
        self.db = db
        self.clock = clock
        self.sessions = sessions
        self.reports = reports
        self.hub = hub
        self.wakeups = wakeups
        self.recorded = recorded
        self.lease = lease
        self.reconnect_grace = reconnect_grace
        self.max_releases = max_releases
        self.detached: dict[str, Detached] = {}  # job id -> attempt of a lost stream

    def add(self, session: ExecutorSession) -> ExecutorSession | None:
        """Serve `session`; returns the session of that name it replaces (closed), if any: the
        caller hands that one's attempts to `remove`."""
        previous = self.sessions.get(session.name)
        if previous is not None:
            previous.close()  # a reconnect replaces the old stream
        self.sessions[session.name] = session
        self.wakeups.wake()
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
            self.detach(job, session.name, job.id not in session.unacked, now)
        session.leave_all()
        if self.detached:
            self.wakeups.note_deadline(now + self.reconnect_grace, now)
            self.wakeups.wake()  # the loop recomputes how long to sleep

    def detach(self, job: JobRecord, executor: str, acknowledged: bool, now: datetime) -> None:
        """Hold an attempt of a lost stream for `reconnect_grace` (see the module docstring)."""
        self.detached[job.id] = Detached(
            job=job,
            executor=executor,
            acknowledged=acknowledged,
            lost_at=now,
            deadline=now + self.reconnect_grace,
        )

    def detach_claimed(
        self, session: ExecutorSession, jobs: Iterable[JobRecord], now: datetime
    ) -> None:
        """Jobs claimed for a stream that ended during the claim: held like the other attempts
        of a lost stream (never acknowledged: released then, without burning an attempt)."""
        for job in jobs:
            self.detach(job, session.name, False, now)
            self.hub.notify(job.id)
        self.wakeups.note_deadline(now + self.reconnect_grace, now)

    def note_deadlines(self, now: datetime) -> None:
        for detached in self.detached.values():
            self.wakeups.note_deadline(detached.deadline, now)

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
                            self.wakeups.wake_at(outcome.run_at)
                        self.recorded(job, outcome.state)
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
                        self.wakeups.new_work()
                moved += 1
            except ConcurrentModification:
                pass  # finished, re-attached or rescued meanwhile
            self.reports.forget(job_id)  # its executor's stream is gone: no outcome will store it
            self.hub.notify(job_id)
        return moved
