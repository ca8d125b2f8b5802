"""Cron firing (leader-only, a start/stop service).

While this replica leads, each round is one transaction: the epoch check, then up to `batch`
due schedules (next_fire_at <= now, not paused) locked `FOR UPDATE SKIP LOCKED` through the
partial index ix_schedules_due. For each, the catch-up policy picks the fires to make
(scheduler/domain/schedules.py `plan_fires`), each fire applies the overlap policy and inserts its
schedule_fires row and its job together (scheduler/store/schedules.py `fire`: a fire whose row
exists is not made again), and next_fire_at advances past now. A deposed leader's round is
refused by the epoch check; a round that fails rolls back whole, fire rows and jobs alike.

Between rounds the loop sleeps until the earliest next_fire_at, at most `poll_interval` (a safety
net only: `wake()` cuts the sleep short, and the server calls it when this replica becomes the
leader and when a schedule is created or resumed on any replica, through the jobsched_schedules
notification). A replica that does not lead issues no statement at all. After a round that
submitted jobs, `on_fired` wakes the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from jobsched.tracing import background_span
from scheduler.domain.errors import InvalidArgument, JobschedError
from scheduler.domain.jobs import NewJob
from scheduler.domain.schedules import MAX_FIRES_PER_ROUND, ScheduleRecord, cron_rule, plan_fires
from scheduler.store.database import Database
from scheduler.store.leadership import check_epoch
from scheduler.store.schedules import (
    Fired,
    fire,
    lock_due_schedules,
    pause_broken_schedule,
    select_next_due,
    update_after_fires,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("jobsched.cron")

# A due schedule that a round could not take (another transaction holds it) is looked at again
# after this long, not in a busy loop.
_MIN_SLEEP = 0.05


class Leadership(Protocol):
    """What the loop needs of the elector (scheduler.leader.LeaderElector)."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def epoch(self) -> int | None: ...

    @property
    def replica_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class FireRound:
    fired: list[Fired]
    more: bool  # due fires remain (a full batch, or catch-up beyond the per-round limit)
    next_due: datetime | None  # the earliest next_fire_at after the round


class CronFirer:
    # Set by the server with tracing on: a span per round, its row count an attribute.
    tracer: Tracer | None = None

    def __init__(
        self,
        db: Database,
        leader: Leadership,
        clock: Callable[[], datetime],
        decode: Callable[[bytes, datetime], NewJob],
        *,
        poll_interval: float = 30.0,
        batch: int = 100,
        max_fires: int = MAX_FIRES_PER_ROUND,
        on_fired: Callable[[Sequence[Fired]], None] = lambda fired: None,
    ) -> None:
        """`decode` turns a stored job template into the job to submit (the API layer's
        job_from_template: the store never reads protobuf)."""
        self.db = db
        self.leader = leader
        self.clock = clock
        self.decode = decode
        self.poll_interval = poll_interval
        self.batch = batch
        self.max_fires = max_fires
        self.on_fired = on_fired
        self.fired_total = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cron")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """A schedule was created or resumed: look at the next fire times again now."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            next_due: datetime | None = None
            try:
                result = await self.fire_once()
                while result.more:
                    result = await self.fire_once()
                next_due = result.next_due
            except JobschedError as exc:
                log.warning("cron round failed", extra={"fields": {"error": str(exc)}})
            delay = self.poll_interval
            if next_due is not None:
                until = (next_due - self.clock()).total_seconds()
                delay = min(delay, max(until, _MIN_SLEEP))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()

    async def fire_once(self) -> FireRound:
        """One round, if this replica leads (an empty round otherwise)."""
        if not self.leader.is_leader:
            return FireRound([], False, None)
        epoch = self.leader.epoch
        with background_span(self.tracer, "jobsched.cron", **{"jobsched.epoch": epoch}) as span:
            async with self.db.transaction() as conn:
                await check_epoch(conn, epoch)
                # The epoch in the history: which leader submitted (checked by the fault tests).
                actor = f"leader:{self.leader.replica_id}@{epoch}"
                result = await self.fire_due(conn, self.clock(), actor)
            if span is not None:
                span.set_attribute("jobsched.fired", len(result.fired))
        self.announce(result.fired)
        return result

    async def fire_due(self, conn: AsyncConnection, now: datetime, actor: str) -> FireRound:
        """The body of a round, in the caller's transaction (which checked the epoch)."""
        fired: list[Fired] = []
        due = await lock_due_schedules(conn, now, self.batch)
        more = len(due) == self.batch
        for schedule in due:
            made, behind = await self._fire_schedule(conn, schedule, now, actor)
            fired += made
            more = more or behind
        return FireRound(fired, more, await select_next_due(conn))

    def announce(self, fired: Sequence[Fired]) -> None:
        """After the commit: log the fires and hand them to `on_fired`."""
        submitted = [f for f in fired if f.job is not None]
        for f in fired:
            log.info(
                "schedule fired",
                extra={
                    "fields": {
                        "event": "cron.fired",
                        "schedule": f.schedule_id,
                        "fire_time": f.fire_time.isoformat(),
                        "job": f.job.id if f.job is not None else None,
                        "skipped": f.skipped,
                        "duplicate": f.duplicate,
                    }
                },
            )
        self.fired_total += len(submitted)
        if fired:
            self.on_fired(fired)

    async def _fire_schedule(
        self, conn: AsyncConnection, schedule: ScheduleRecord, now: datetime, actor: str
    ) -> tuple[list[Fired], bool]:
        """Make the schedule's due fires; (fires, whether more are due than one round makes)."""
        try:
            rule = cron_rule(schedule.cron, schedule.time_zone)
            template = self.decode(schedule.job_template, now)
        except InvalidArgument as exc:
            # Stored before a rule changed (a zone gone from the zone data, stricter template
            # rules): it can never fire. Paused, so that it is visible and does not block.
            log.error(
                "schedule cannot fire: paused",
                extra={"fields": {"schedule": schedule.id, "error": str(exc)}},
            )
            await pause_broken_schedule(conn, schedule.id, now)
            return [], False
        plan = plan_fires(
            rule, schedule.next_fire_at, now, schedule.catchup, schedule.catchup_window,
            self.max_fires,
        )  # fmt: skip
        fired: list[Fired] = []
        last_job_id = schedule.last_job_id
        last_fire_at: datetime | None = None
        for fire_time in plan.fire_times:
            made = await fire(
                conn, schedule, fire_time, template,
                previous_job_id=last_job_id, now=now, actor=actor,
            )  # fmt: skip
            fired.append(made)
            if made.job is not None:
                last_job_id, last_fire_at = made.job.id, fire_time
        await update_after_fires(
            conn,
            schedule.id,
            next_fire_at=plan.next_fire_at,
            last_fire_at=last_fire_at,
            last_job_id=last_job_id if last_fire_at is not None else None,
            now=now,
        )
        return fired, plan.next_fire_at <= now
