"""The queue-depth gauges' sample: one read transaction on the leader every `interval` seconds
(start/stop service), kept in memory and reported by the gauges (gauges.py):

    depth    (queue, state) -> active jobs             jobsched_queue_jobs{queue,state}
    oldest   queue -> due time of its oldest QUEUED job jobsched_queue_oldest_wait_seconds{queue}
    waiting  (queue, reason) -> jobs not running       jobsched_jobs_waiting{queue,reason}

Not per scrape and not per replica: followers hold no sample, so a Prometheus scraping every
replica gets the backlog once, from the leader. The statements are one GROUP BY over the active
jobs, the queues' settings and the live replicas' executors (scheduler/store/queue_depth.py);
the waiting reasons are the ones GetJobStatus and ListQueues give (domain/waiting.py), for each
(queue, state, type) group at once. Queue names are raw here; the gauges bound them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from scheduler.domain.errors import JobschedError
from scheduler.domain.queues import QueueSettings
from scheduler.domain.states import JobState
from scheduler.domain.waiting import waiting_reason
from scheduler.store.database import Database
from scheduler.store.queue_depth import QueueDepthFacts, queue_depth_facts

log = logging.getLogger("jobsched.telemetry")

DEFAULT_INTERVAL = 15.0  # a common Prometheus scrape interval


class QueueDepthSampler:
    def __init__(
        self,
        db: Database,
        is_leader: Callable[[], bool],
        interval: float = DEFAULT_INTERVAL,
        live_within: timedelta = timedelta(seconds=30),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.is_leader = is_leader
        self.interval = interval
        self.live_within = live_within
        self.clock = clock
        # From the last sample; all empty on a follower.
        self.depth: dict[tuple[str, str], int] = {}
        self.oldest: dict[str, datetime | None] = {}  # None: the queue has no QUEUED job
        self.waiting: dict[tuple[str, str], int] = {}
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
        self._clear()

    def _clear(self) -> None:
        self.depth, self.oldest, self.waiting = {}, {}, {}

    async def sample_once(self) -> None:
        if not self.is_leader():
            self._clear()
            return
        async with self.db.transaction() as conn:
            facts = await queue_depth_facts(conn, self.clock() - self.live_within)
        if self.is_leader():  # still: a deposed leader reports nothing
            self._take(facts)
            self.samples += 1

    def _take(self, facts: QueueDepthFacts) -> None:
        depth: dict[tuple[str, str], int] = {}
        oldest: dict[str, datetime | None] = {}
        running: dict[tuple[str, str], int] = {}
        for g in facts.groups:
            key = (g.queue, g.state)
            depth[key] = depth.get(key, 0) + g.jobs
            due = oldest.get(g.queue)
            if g.oldest_due is not None and (due is None or g.oldest_due < due):
                due = g.oldest_due
            oldest[g.queue] = due
            if g.state == "running":
                running[(g.tenant, g.queue)] = running.get((g.tenant, g.queue), 0) + g.jobs
        waiting: dict[tuple[str, str], int] = {}
        for g in facts.groups:
            if g.state == "running":
                continue
            settings = facts.settings.get((g.tenant, g.queue)) or QueueSettings(name=g.queue)
            reason = waiting_reason(
                state=JobState(g.state),
                queue=g.queue,
                job_type=g.type,
                settings=settings,
                running_in_queue=running.get((g.tenant, g.queue), 0),
                executors=facts.executors,
            ).reason
            if reason is not None:
                key = (g.queue, reason.value.lower())
                waiting[key] = waiting.get(key, 0) + g.jobs
        self.depth, self.oldest, self.waiting = depth, oldest, waiting

    async def _run(self) -> None:
        while True:
            try:
                await self.sample_once()
            except JobschedError as exc:
                # Unavailable: the last sample is stale, report none rather than a wrong one.
                self._clear()
                log.warning("queue depth not sampled", extra={"fields": {"error": str(exc)}})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
