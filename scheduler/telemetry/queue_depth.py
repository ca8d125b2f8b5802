"""Queue depth for `jobsched_queue_jobs{queue,state}`: one query on the leader every `interval`
seconds (start/stop service), kept in memory and reported by the gauge collector (gauges.py).

Not per scrape and not per replica: followers hold no sample, so a Prometheus scraping every
replica gets the backlog once, from the leader; the query is one GROUP BY over the active jobs
(scheduler/store/queue_depth.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from scheduler.domain.errors import JobschedError
from scheduler.store.database import Database
from scheduler.store.queue_depth import count_active_jobs

log = logging.getLogger("jobsched.telemetry")

DEFAULT_INTERVAL = 15.0  # a common Prometheus scrape interval


class QueueDepthSampler:
    def __init__(
        self, db: Database, is_leader: Callable[[], bool], interval: float = DEFAULT_INTERVAL
    ) -> None:
        self.db = db
        self.is_leader = is_leader
        self.interval = interval
        # (queue, state) -> jobs, from the last query; empty on a follower.
        self.depth: dict[tuple[str, str], int] = {}
        self.samples = 0  # queries answered (tests)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="queue-depth-sampler")

    def wake(self) -> None:
        """Sample now (a new leader reports at once, a deposed one stops at once)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.depth = {}

    async def sample_once(self) -> None:
        if not self.is_leader():
            self.depth = {}
            return
        async with self.db.read() as conn:
            rows = await count_active_jobs(conn)
        if self.is_leader():  # still: a deposed leader reports nothing
            self.depth = {(queue, state): jobs for queue, state, jobs in rows}
            self.samples += 1

    async def _run(self) -> None:
        while True:
            try:
                await self.sample_once()
            except JobschedError as exc:
                # Unavailable: the last sample is stale, report none rather than a wrong one.
                self.depth = {}
                log.warning("queue depth not sampled", extra={"fields": {"error": str(exc)}})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
