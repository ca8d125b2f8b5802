"""The artifact janitor (leader-only, a start/stop service): deletes the S3 objects of artifacts
that are gone.

Deleting a job (DeleteJob, the retention sweep) or replacing an artifact deletes its rows by
cascade; an AFTER DELETE trigger on artifacts records each S3 key in artifact_deletions in the
same transaction (migration 0012), and so do uploads that never committed. While this replica
leads and an S3 store is configured, every `interval` seconds (and when woken) the janitor reads
up to `batch` due keys, deletes their objects (DeleteObjects, idempotent) and then, behind the
epoch check, their rows; a full batch is followed by the next at once. A failure leaves the rows
for the next round. `deleted_total` counts the objects deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from scheduler.artifacts.s3 import S3Objects
from scheduler.domain.errors import JobschedError
from scheduler.maintenance.cron import Leadership
from scheduler.store.artifacts import delete_deletions, select_due_deletions
from scheduler.store.database import Database
from scheduler.store.leadership import check_epoch

log = logging.getLogger("jobsched.artifacts")


class ArtifactJanitor:
    def __init__(
        self,
        db: Database,
        leader: Leadership,
        clock: Callable[[], datetime],
        objects: S3Objects,
        *,
        interval: float = 60.0,
        batch: int = 500,
    ) -> None:
        self.db = db
        self.leader = leader
        self.clock = clock
        self.objects = objects
        self.interval = interval
        self.batch = batch
        self.deleted_total = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="artifact-janitor")

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
                log.warning("artifact janitor failed", extra={"fields": {"error": str(exc)}})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def sweep(self) -> int:
        """Delete every due object, a batch at a time, if this replica leads."""
        deleted = 0
        while self.leader.is_leader:
            count = await self.sweep_once()
            deleted += count
            if count < self.batch:
                break
        if deleted:
            log.info(
                "deleted the objects of removed artifacts",
                extra={"fields": {"event": "artifacts.objects_deleted", "count": deleted}},
            )
        return deleted

    async def sweep_once(self) -> int:
        if not self.leader.is_leader:
            return 0
        epoch = self.leader.epoch
        now = self.clock()
        async with self.db.read() as conn:
            keys = await select_due_deletions(conn, now, self.batch)
        if not keys:
            return 0
        await self.objects.delete(keys)
        async with self.db.transaction() as conn:
            await check_epoch(conn, epoch)
            await delete_deletions(conn, keys, now)
        self.deleted_total += len(keys)
        return len(keys)
