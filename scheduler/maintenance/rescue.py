"""Lease rescue and the timeout backstop (leader-only, a start/stop service).

RUNNING jobs whose lease expired — their executor vanished without the stream noticing, or
stalled past its lease — fail as retryable ("lease expired"), and so do RUNNING jobs still
running `timeout_grace` after started_at + timeout — their executor did not stop them ("timed
out after Ns"): SCHEDULED after backoff, or DEAD after the last attempt.

While this replica leads, the loop sleeps until the earliest deadline among the RUNNING jobs
(lease expiry, or started_at + timeout + grace), read by one autocommit statement without the
epoch check (it writes nothing), and at most `interval` seconds (a safety net). Only when a
deadline has passed does it run a rescue round: one transaction, the epoch check, then the
guarded set-based rescues (scheduler/store/attempts.py). An idle leader so costs one statement
per `interval`.

Nothing is late for it: a job that starts running after the read has a lease of at least
`lease` (this replica's setting) and a timeout deadline at least `timeout_grace` away, so the
loop never sleeps longer than the shorter of the two. (A replica configured with a shorter
lease than the leader's can see its jobs rescued up to `interval` late.) `wake()` cuts the sleep
short; the server calls it when this replica becomes the leader.

After the store was unreachable (`Database.unavailable_at`: any statement of this replica, or
the leader election's connection), nothing is rescued until it has answered for
`recovery_grace`: no executor could renew a lease meanwhile (nor could the leader have rescued),
so every lease that ran out during the outage would otherwise be failed at once, and the
results the executors kept and re-send would be refused as stale. The executors' next
heartbeats renew their leases (expired ones too) and their re-sent results are recorded first;
what is still due after the grace is rescued then. The timeout backstop waits likewise: an
executor that stopped a timed-out handler during the outage reports that failure itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobsched.tracing import background_span
from scheduler.domain.errors import JobschedError
from scheduler.leader import LeaderElector
from scheduler.store.attempts import Rescued, rescue_expired_leases, rescue_timed_out
from scheduler.store.database import Database
from scheduler.store.leadership import check_epoch, rescue_deadlines

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("jobsched.rescue")

_AFTER_DEADLINE = 0.005  # seconds past a deadline at which the loop wakes
_RETRY_LOCKED = 0.1  # seconds before looking again at due jobs that a round could not take


class LeaseRescuer:
    # Set by the server with tracing on: a span per round, its row count an attribute.
    tracer: Tracer | None = None

    def __init__(
        self,
        db: Database,
        leader: LeaderElector,
        clock: Callable[[], datetime],
        *,
        interval: float = 5.0,
        timeout_grace: timedelta = timedelta(seconds=10),
        lease: timedelta | None = None,
        batch: int = 1000,
        on_rescued: Callable[[list[Rescued]], None] = lambda rescued: None,
        recovery_grace: timedelta = timedelta(seconds=10),
    ) -> None:
        self.db = db
        self.leader = leader
        self.clock = clock
        self.interval = interval
        self.timeout_grace = timeout_grace
        # How far ahead the earliest deadline of a job that starts running after a read can be.
        horizon = timeout_grace if lease is None else min(lease, timeout_grace)
        self.horizon = horizon.total_seconds()
        self.batch = batch
        self.on_rescued = on_rescued
        self.recovery_grace = recovery_grace.total_seconds()
        self.rescued_total = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._fruitless = 0  # rounds in a row that found due jobs but rescued none

    def wake(self) -> None:
        """Look at the deadlines now (e.g. this replica just became the leader)."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lease-rescue")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            delay = self.interval
            try:
                delay = await self.round()
            except JobschedError as exc:
                log.warning("lease rescue failed", extra={"fields": {"error": str(exc)}})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def round(self) -> float:
        """Rescue what is due, if this replica leads; returns how long to sleep (seconds)."""
        if not self.leader.is_leader:
            return self.interval
        epoch = {"jobsched.epoch": self.leader.epoch}
        with background_span(self.tracer, "jobsched.rescue", **epoch) as span:
            before = self.rescued_total
            delay = await self._round()
            if span is not None:
                span.set_attribute("jobsched.rescued", self.rescued_total - before)
        return delay

    async def _round(self) -> float:
        recovering = self.recovering()
        if recovering > 0:
            return recovering
        while True:
            async with self.db.read() as conn:
                deadlines = await rescue_deadlines(conn)
            now = self.clock()
            due = [] if deadlines.lease_expires_at is None else [deadlines.lease_expires_at]
            if deadlines.timeout_at is not None:
                due.append(deadlines.timeout_at + self.timeout_grace)
            wait = min([(d - now).total_seconds() for d in due], default=math.inf)
            if wait > 0:
                self._fruitless = 0
                # The rescue's conditions are strict (deadline < now): wake just after.
                return min(self.interval, self.horizon, wait + _AFTER_DEADLINE)
            if not await self.rescue_once():
                if not self.leader.is_leader:
                    return self.interval
                # Due, yet nothing rescued: a completion in flight holds the rows (SKIP LOCKED).
                # Look again shortly, backing off rather than spinning.
                self._fruitless += 1
                return min(self.interval, _RETRY_LOCKED * 2.0 ** min(self._fruitless, 10))
            self._fruitless = 0
            # Rescued some (a full batch: there may be more): read the deadlines again.

    def recovering(self) -> float:
        """Seconds until the store has answered for `recovery_grace` since it was last found
        unreachable (0: rescue may go on)."""
        if self.db.unavailable_at is None:
            return 0.0
        return max(0.0, self.db.unavailable_at + self.recovery_grace - time.monotonic())

    async def rescue_once(self) -> list[Rescued]:
        """One round, if this replica leads: [] otherwise."""
        if not self.leader.is_leader:
            return []
        epoch = self.leader.epoch
        async with self.db.transaction() as conn:
            await check_epoch(conn, epoch)
            now = self.clock()
            # The epoch in the history: which leader did it (checked by the fault tests).
            actor = f"leader:{self.leader.replica_id}@{epoch}"
            rescued = await rescue_expired_leases(conn, now, self.batch, actor)
            rescued += await rescue_timed_out(
                conn, now, self.timeout_grace, self.batch - len(rescued), actor
            )
        if rescued:
            self.rescued_total += len(rescued)
            log.warning(
                "rescued jobs with expired leases or past their timeout",
                extra={"fields": {"event": "rescue.rescued", "count": len(rescued)}},
            )
            self.on_rescued(rescued)
        return rescued
