"""The retention sweep (leader-only, a start/stop service): finished jobs older than their
queue's retention are deleted, with their history and log lines; then audit events older than
the audit retention (scheduler/store/audit.py: the one DELETE the audit log's trigger admits).

While this replica leads, every `interval` seconds it deletes in batches of `batch` jobs, each
batch one short transaction behind the epoch check (a deposed leader deletes nothing); after a
full batch it goes on at once, after a short batch it sleeps again. Small batches keep each
transaction's locks and WAL small, so the claim and outcome paths never wait long behind it.
A replica that does not lead issues no statement. `deleted_total` counts the jobs it deleted,
`audit_deleted_total` the audit events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobsched.tracing import background_span
from scheduler.domain.errors import JobschedError
from scheduler.maintenance.cron import Leadership
from scheduler.store.audit import delete_expired_audit_events
from scheduler.store.database import Database
from scheduler.store.leadership import check_epoch
from scheduler.store.retention import delete_expired_jobs

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("jobsched.retention")

DEFAULT_RETENTION = timedelta(days=30)
DEFAULT_AUDIT_RETENTION = timedelta(days=90)


class RetentionSweeper:
    # Set by the server with tracing on: a span per round, its row count an attribute.
    tracer: Tracer | None = None

    def __init__(
        self,
        db: Database,
        leader: Leadership,
        clock: Callable[[], datetime],
        *,
        retention: timedelta = DEFAULT_RETENTION,
        audit_retention: timedelta = DEFAULT_AUDIT_RETENTION,
        interval: float = 60.0,
        batch: int = 500,
    ) -> None:
        """`retention`: how long finished jobs of queues without a retention of their own are
        kept; `audit_retention`: how long audit events are kept (zero: forever, for both)."""
        self.db = db
        self.leader = leader
        self.clock = clock
        self.retention = retention
        self.audit_retention = audit_retention
        self.interval = interval
        self.batch = batch
        self.deleted_total = 0
        self.audit_deleted_total = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sweep()
            except JobschedError as exc:
                log.warning("retention sweep failed", extra={"fields": {"error": str(exc)}})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def sweep(self) -> int:
        """Delete every expired job, a batch per transaction, if this replica leads; returns how
        many were deleted."""
        deleted = 0
        while self.leader.is_leader:
            count = await self.sweep_once()
            deleted += count
            if count < self.batch:
                break
            await asyncio.sleep(0)  # let the hot paths in between batches
        if deleted:
            log.info(
                "deleted finished jobs past their retention",
                extra={"fields": {"event": "retention.deleted", "count": deleted}},
            )
        audit = 0
        while self.leader.is_leader:
            count = await self.sweep_audit_once()
            audit += count
            if count < self.batch:
                break
            await asyncio.sleep(0)
        if audit:
            log.info(
                "deleted audit events past their retention",
                extra={"fields": {"event": "retention.audit_deleted", "count": audit}},
            )
        return deleted

    async def sweep_once(self) -> int:
        """One batch, if this replica leads."""
        if not self.leader.is_leader:
            return 0
        epoch = self.leader.epoch
        with background_span(
            self.tracer, "jobsched.retention", **{"jobsched.epoch": epoch}
        ) as span:
            async with self.db.transaction() as conn:
                await check_epoch(conn, epoch)
                count = await delete_expired_jobs(conn, self.clock(), self.retention, self.batch)
            if span is not None:
                span.set_attribute("jobsched.deleted", count)
        self.deleted_total += count
        return count

    async def sweep_audit_once(self) -> int:
        """One batch of expired audit events, if this replica leads."""
        if not self.leader.is_leader or self.audit_retention <= timedelta(0):
            return 0
        epoch = self.leader.epoch
        async with self.db.transaction() as conn:
            await check_epoch(conn, epoch)
            count = await delete_expired_audit_events(
                conn, self.clock(), self.audit_retention, self.batch
            )
        self.audit_deleted_total += count
        return count
