"""The dispatcher (a start/stop service): claims eligible jobs for connected executors with free
credits and pushes assignments to their streams, and records the outcomes they report.

Wake-ups: `wake()` (a local submit, a freed credit, a new executor) and a slow safety poll that
also promotes SCHEDULED jobs whose run_at has come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from jobsched.v1 import executor_service_pb2 as pb
from scheduler.dispatch.sessions import ExecutorSession
from scheduler.domain.errors import ConcurrentModification, JobschedError
from scheduler.domain.jobs import JobRecord, Progress, ProgressUpdate
from scheduler.domain.retry import RetryPolicy, after_failure
from scheduler.domain.states import JobState
from scheduler.store.attempts import (
    claim_jobs,
    fail_attempt,
    promote_due_jobs,
    release_attempt,
    renew_leases,
    succeed_attempt,
    write_progress,
)
from scheduler.store.database import Database
from scheduler.store.jobs import Guard, cancel_job
from scheduler.watch import JobWatchHub

log = logging.getLogger("jobsched.dispatch")
DEFAULT_RETRY_POLICY = RetryPolicy()


def _attempt(job: JobRecord) -> pb.JobAttempt:
    return pb.JobAttempt(job_id=job.id, attempt=job.attempt)


def assignment(job: JobRecord, lease: timedelta, now: datetime) -> pb.ConnectResponse:
    expires = Timestamp()
    expires.FromDatetime(now + lease)
    message = pb.Assignment(
        attempt=_attempt(job),
        type=job.type,
        queue=job.queue,
        payload=job.payload,
        labels=job.labels,
        lease_expire_time=expires,
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
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        hub: JobWatchHub | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.lease = lease
        self.ack_timeout = ack_timeout
        self.poll_interval = poll_interval
        self.retry_policy = retry_policy
        self.sessions: dict[str, ExecutorSession] = {}
        self.hub = hub or JobWatchHub()
        self._wake = asyncio.Event()
        self._promoted_at = -math.inf  # time.monotonic() of the last promotion
        self._task: asyncio.Task[None] | None = None
        # Progress is coalesced: only the latest report per job waits for the next flush, so
        # each job's row is written at most once per progress_interval however often it reports.
        self.progress_interval = progress_interval
        self._progress: dict[str, ProgressUpdate] = {}
        self._progress_task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatcher")
        self._progress_task = asyncio.create_task(self._flush_progress(), name="progress-writer")

    async def stop(self) -> None:
        for task in (self._task, self._progress_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._progress_task = None
        with contextlib.suppress(JobschedError):
            await self.flush_progress()
        for session in list(self.sessions.values()):
            session.close()

    def wake(self) -> None:
        self._wake.set()

    # --- sessions ----------------------------------------------------------------------------

    def add(self, session: ExecutorSession) -> None:
        previous = self.sessions.get(session.name)
        if previous is not None:
            previous.close()  # a reconnect replaces the old stream
        self.sessions[session.name] = session
        self.wake()

    async def remove(self, session: ExecutorSession) -> None:
        """The stream ended: its unfinished attempts fail (retried after backoff, or dead)."""
        session.close()
        if self.sessions.get(session.name) is session:
            del self.sessions[session.name]
        for job in list(session.in_flight.values()):
            with contextlib.suppress(JobschedError):
                await self.record_failure(
                    session, job.id, job.attempt, "executor disconnected", True
                )

    def request_cancel(self, job: JobRecord) -> None:
        """Forward a client's cancel to the executor running the job, if it is connected here."""
        for session in self.sessions.values():
            running = session.in_flight.get(job.id)
            if running is not None and running.attempt == job.attempt:
                session.send(
                    pb.ConnectResponse(
                        cancel=pb.CancelAssignment(attempt=_attempt(job), reason="cancelled")
                    )
                )

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.dispatch_once()
            except JobschedError as exc:
                log.warning("dispatch failed", extra={"fields": {"error": str(exc)}})

    async def dispatch_once(self) -> int:
        """Revert unacknowledged assignments, promote due jobs (at most once per poll interval),
        then give every session with credits up to that many jobs."""
        now = self.clock()
        await self.revert_unacknowledged(now)
        # Promotion runs at the poll's cadence, not on every wake-up: a submit must not pay for
        # a scan of scheduled jobs.
        if time.monotonic() - self._promoted_at >= self.poll_interval:
            self._promoted_at = time.monotonic()
            async with self.db.transaction() as conn:
                await promote_due_jobs(conn, now)
        handed_out = 0
        for session in list(self.sessions.values()):
            credits = session.credits
            if credits == 0:
                continue
            async with self.db.transaction() as conn:
                jobs = await claim_jobs(
                    conn,
                    executor=session.name,
                    job_types=session.job_types,
                    queues=session.queues,
                    limit=credits,
                    lease=self.lease,
                    now=now,
                )
            for job in jobs:
                session.in_flight[job.id] = job
                session.unacked[job.id] = now + self.ack_timeout
                session.send(assignment(job, self.lease, now))
                self.hub.notify(job.id)
            handed_out += len(jobs)
        return handed_out

    def record_progress(
        self, session: ExecutorSession, job_id: str, attempt: int, progress: Progress
    ) -> None:
        job = session.in_flight.get(job_id)
        if job is not None and job.attempt == attempt:
            self._progress[job_id] = ProgressUpdate(job_id, attempt, progress)

    async def flush_progress(self) -> int:
        pending, self._progress = list(self._progress.values()), {}
        if not pending:
            return 0
        async with self.db.transaction() as conn:
            written = await write_progress(conn, pending)
        for update in pending:
            self.hub.notify(update.job_id)
        return written

    async def _flush_progress(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            try:
                await self.flush_progress()
            except JobschedError as exc:
                # Progress is advisory and superseded by the next report; the outcome is not.
                log.warning("progress not written", extra={"fields": {"error": str(exc)}})

    def acknowledge(self, session: ExecutorSession, job_id: str, attempt: int) -> None:
        job = session.in_flight.get(job_id)
        if job is not None and job.attempt == attempt:
            session.unacked.pop(job_id, None)

    async def revert_unacknowledged(self, now: datetime) -> int:
        """Assignments not acknowledged in time go back to QUEUED (attempt handed back)."""
        reverted = 0
        for session in list(self.sessions.values()):
            for job_id, deadline in list(session.unacked.items()):
                if deadline > now:
                    continue
                guard = self._guard(session, job_id, session.in_flight[job_id].attempt)
                with contextlib.suppress(ConcurrentModification):
                    async with self.db.transaction() as conn:
                        await release_attempt(
                            conn, guard, now, "assignment not acknowledged", "scheduler"
                        )
                    reverted += 1
                self._finished(session, job_id)
        return reverted

    async def heartbeat(self, session: ExecutorSession) -> None:
        async with self.db.transaction() as conn:
            await renew_leases(conn, session.name, self.lease, self.clock())

    # --- outcomes ----------------------------------------------------------------------------

    def _guard(self, session: ExecutorSession, job_id: str, attempt: int) -> Guard:
        job = session.in_flight.get(job_id)
        if job is None or job.attempt != attempt:
            raise ConcurrentModification(f"attempt {attempt} of job {job_id} is not running here")
        return Guard(job.tenant, job.id, JobState.RUNNING, attempt)

    def _finished(self, session: ExecutorSession, job_id: str) -> None:
        self.hub.notify(job_id)
        session.in_flight.pop(job_id, None)
        session.unacked.pop(job_id, None)
        self._progress.pop(job_id, None)  # the outcome's own write is final
        self.wake()  # a credit is free

    async def record_success(
        self, session: ExecutorSession, job_id: str, attempt: int, result: bytes
    ) -> None:
        guard = self._guard(session, job_id, attempt)
        try:
            async with self.db.transaction() as conn:
                await succeed_attempt(conn, guard, result, self.clock(), f"executor:{session.name}")
        finally:
            self._finished(session, job_id)

    async def record_failure(
        self, session: ExecutorSession, job_id: str, attempt: int, error: str, retryable: bool
    ) -> None:
        guard = self._guard(session, job_id, attempt)
        job = session.in_flight[job_id]
        now = self.clock()
        outcome = after_failure(
            attempt=attempt,
            max_attempts=job.max_attempts,
            retryable=retryable,
            now=now,
            policy=self.retry_policy,
        )
        try:
            async with self.db.transaction() as conn:
                await fail_attempt(conn, guard, outcome, error, now, f"executor:{session.name}")
        finally:
            self._finished(session, job_id)

    async def record_cancelled(self, session: ExecutorSession, job_id: str, attempt: int) -> None:
        guard = self._guard(session, job_id, attempt)
        try:
            async with self.db.transaction() as conn:
                await cancel_job(
                    conn, guard, self.clock(), "cancelled by client", f"executor:{session.name}"
                )
        finally:
            self._finished(session, job_id)
