"""One connected executor stream: what it can run, what it runs, and its outgoing messages."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime

from jobsched.v1 import executor_service_pb2 as pb
from scheduler.domain.errors import JobschedError
from scheduler.domain.jobs import JobRecord

log = logging.getLogger("jobsched.dispatch")


@dataclass(eq=False)
class ExecutorSession:
    """Credits = capacity minus attempts in flight: the dispatcher never exceeds them."""

    name: str
    capacity: int
    job_types: tuple[str, ...]
    queues: tuple[str, ...]
    session_id: str = ""
    # The tenants whose jobs it may run (its credential's); None: every tenant (auth off, or a
    # credential for all of them).
    tenants: tuple[str, ...] | None = None
    # The API key it authenticated with (its id), checked again while the stream is open
    # (scheduler/auth/revocations.py); None with authentication off.
    key_id: str | None = None
    # When its credential stops being valid by itself (a JWT's exp + leeway): the stream is
    # ended then, by the same sweep (scheduler/auth/revocations.py). None: never.
    credential_expires_at: datetime | None = None
    # Outgoing messages; None closes the stream. Assignments are bounded by credits.
    outbox: asyncio.Queue[pb.ConnectResponse | None] = field(default_factory=asyncio.Queue)
    in_flight: dict[str, JobRecord] = field(default_factory=dict)
    # job id -> when its assignment is reverted unless the executor acknowledges it first
    unacked: dict[str, datetime] = field(default_factory=dict)
    closed: bool = False
    # Why the scheduler ended the stream (the Connect call ends with it), if it did.
    ended: JobschedError | None = None
    # The executor is shutting down (Heartbeat.draining): no more assignments.
    draining: bool = False
    # Register.accepts_batches: consecutive assignments or result acks go out as one message.
    accepts_batches: bool = False

    # In-flight attempts whose result arrived and is being recorded: the executor's slot is
    # free already (it counts running handlers only), so they hold no credit and the next job
    # can be claimed while the result commits.
    recording: set[str] = field(default_factory=set)

    # Liveness (scheduler/dispatch/watchdog.py): time.monotonic() of the registration or the
    # last Heartbeat. Silent for longer than `silent_after` (two heartbeat intervals), the
    # session gets no assignments; the watchdog ends it after the heartbeat timeout.
    heard_at: float = field(default_factory=time.monotonic)
    silent_after: float = math.inf
    # In-flight attempts missing from its heartbeats: job id -> (time.monotonic() of the first
    # heartbeat without it, heartbeats without it since).
    missing: dict[str, tuple[float, int]] = field(default_factory=dict)
    # job id -> time.monotonic() when a result for its attempt last arrived (an unanswered one
    # is re-sent by the executor while the store is unavailable: it still has the attempt).
    results_at: dict[str, float] = field(default_factory=dict)
    # Acks, progress and log lines for attempts not in flight here, dropped: the first is
    # logged, the count when the stream ends (a flood must not flood the log too).
    dropped_reports: int = 0

    @property
    def silent(self) -> bool:
        """No heartbeat for longer than `silent_after`: frozen, or its link is."""
        return time.monotonic() - self.heard_at > self.silent_after

    @property
    def credits(self) -> int:
        if self.closed or self.draining or self.silent:
            return 0
        return max(0, self.capacity - len(self.in_flight) + len(self.recording))

    def running(self, job_id: str, attempt: int) -> JobRecord | None:
        """The job, if that attempt of it is in flight on this stream."""
        job = self.in_flight.get(job_id)
        return job if job is not None and job.attempt == attempt else None

    def leave(self, job_id: str) -> None:
        """The attempt left this stream (its outcome is recorded, or it moved on)."""
        self.in_flight.pop(job_id, None)
        self.recording.discard(job_id)  # never counted once it left in_flight
        self.unacked.pop(job_id, None)
        self.missing.pop(job_id, None)
        self.results_at.pop(job_id, None)

    def leave_all(self) -> None:
        self.in_flight.clear()
        self.recording.clear()
        self.unacked.clear()
        self.missing.clear()
        self.results_at.clear()

    def refuse(self, kind: str, job_id: str, attempt: int) -> None:
        """An ack, progress or log report for an attempt not in flight here: dropped; the
        first of a stream is logged (and their count when it ends, see Attachment.remove)."""
        self.dropped_reports += 1
        if self.dropped_reports == 1:
            log.warning(
                "report for an attempt not running on the stream refused",
                extra={
                    "fields": {
                        "event": "dispatch.report_dropped",
                        "executor": self.name,
                        "kind": kind,
                        "job_id": job_id[:64],
                        "attempt": attempt,
                    }
                },
            )

    def send(self, message: pb.ConnectResponse) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)

    def end(self, error: JobschedError) -> None:
        """Close the stream with `error` as the call's status (the first reason wins)."""
        if not self.closed:
            self.ended = error
        self.close()
