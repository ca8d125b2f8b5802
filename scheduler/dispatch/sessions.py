"""One connected executor stream: what it can run, what it runs, and its outgoing messages."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from jobsched.v1 import executor_service_pb2 as pb
from scheduler.domain.jobs import JobRecord


@dataclass(eq=False)
class ExecutorSession:
    """Credits = capacity minus attempts in flight: the dispatcher never exceeds them."""

    name: str
    capacity: int
    job_types: tuple[str, ...]
    queues: tuple[str, ...]
    # Outgoing messages; None closes the stream. Assignments are bounded by credits.
    outbox: asyncio.Queue[pb.ConnectResponse | None] = field(default_factory=asyncio.Queue)
    in_flight: dict[str, JobRecord] = field(default_factory=dict)
    # job id -> when its assignment is reverted unless the executor acknowledges it first
    unacked: dict[str, datetime] = field(default_factory=dict)
    closed: bool = False
    # The executor is shutting down (Heartbeat.draining): no more assignments.
    draining: bool = False
    # Register.accepts_batches: consecutive assignments or result acks go out as one message.
    accepts_batches: bool = False

    # In-flight attempts whose result arrived and is being recorded: the executor's slot is
    # free already (it counts running handlers only), so they hold no credit and the next job
    # can be claimed while the result commits.
    recording: set[str] = field(default_factory=set)

    @property
    def credits(self) -> int:
        if self.closed or self.draining:
            return 0
        return max(0, self.capacity - len(self.in_flight) + len(self.recording))

    def send(self, message: pb.ConnectResponse) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)
