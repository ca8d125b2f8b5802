"""Lease rescue and the timeout backstop (leader-only, a start/stop service).

RUNNING jobs whose lease expired — their executor vanished without the stream noticing, or
stalled past its lease — fail as retryable ("lease expired"), and so do RUNNING jobs still
running `timeout_grace` after started_at + timeout — their executor did not stop them ("timed
out after Ns"): SCHEDULED after backoff, or DEAD after the last attempt. Runs every `interval`
seconds while this replica leads; one transaction per round: the epoch check, then the guarded
set-based rescues (scheduler/store/attempts.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from scheduler.domain.errors import JobschedError
from scheduler.leader import LeaderElector
from scheduler.store.attempts import Rescued, rescue_expired_leases, rescue_timed_out
from scheduler.store.database import Database
from scheduler.store.leadership import check_epoch

log = logging.getLogger("jobsched.rescue")


class LeaseRescuer:
    def __init__(
        self,
        db: Database,
        leader: LeaderElector,
        clock: Callable[[], datetime],
        *,
        interval: float = 1.0,
        timeout_grace: timedelta = timedelta(seconds=10),
        batch: int = 1000,
        on_rescued: Callable[[list[Rescued]], None] = lambda rescued: None,
    ) -> None:
        self.db = db
        self.leader = leader
        self.clock = clock
        self.interval = interval
        self.timeout_grace = timeout_grace
        self.batch = batch
        self.on_rescued = on_rescued
        self.rescued_total = 0
        self._task: asyncio.Task[None] | None = None

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
            try:
                while len(await self.rescue_once()) == self.batch:
                    pass  # a full batch: there may be more
            except JobschedError as exc:
                log.warning("lease rescue failed", extra={"fields": {"error": str(exc)}})
            await asyncio.sleep(self.interval)

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
