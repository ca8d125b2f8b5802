"""Group commit of successes: the successes that arrive while a batch is being written go
together in the next transaction, one statement for all, so a busy scheduler commits far less
than once per job. Each attempt's last log lines commit with its outcome (watchers see them
first)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from scheduler.dispatch.reports import AttemptKey, BufferedLines, Reports, log_lines
from scheduler.dispatch.sessions import ExecutorSession
from scheduler.domain.errors import ConcurrentModification, JobschedError, Unavailable
from scheduler.store.attempts import Success, succeed_attempts
from scheduler.store.database import Database
from scheduler.store.logs import insert_log_lines

_BATCH_RETRIES = 3  # runs of a batch of successes that lost a deadlock


@dataclass(frozen=True, slots=True)
class _PendingSuccess:
    session: ExecutorSession
    success: Success
    done: asyncio.Future[None]


class SuccessWriter:
    """A start/stop service: `record` queues a success and returns once it is committed.

    `written(session, job_id, succeeded)` is called for each success of a committed batch
    (succeeded False: its attempt was stale); `unwritten(session, job_id, exc)` for each of a
    batch that could not be written."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        reports: Reports,
        written: Callable[[ExecutorSession, str, bool], None],
        unwritten: Callable[[ExecutorSession, str, BaseException], None],
    ) -> None:
        self.db = db
        self.clock = clock
        self.reports = reports
        self.written = written
        self.unwritten = unwritten
        self._pending: list[_PendingSuccess] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="success-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # Successes not written: not acknowledged, so their executors send them again.
        pending, self._pending = self._pending, []
        for item in pending:
            if not item.done.done():
                item.done.set_exception(Unavailable("the scheduler is stopping"))

    async def record(self, session: ExecutorSession, success: Success) -> None:
        """Returns once `success` is committed; raises ConcurrentModification when its attempt
        was stale."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_PendingSuccess(session, success, done))
        self._ready.set()
        await done

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[_PendingSuccess]) -> None:
        logs: dict[AttemptKey, BufferedLines] = {}
        for pending in batch:
            logs.update(
                await self.reports.take_logs(pending.success.job_id, pending.success.attempt)
            )
        try:
            for remaining in range(_BATCH_RETRIES, 0, -1):
                try:
                    async with self.db.transaction() as conn:
                        await insert_log_lines(conn, log_lines(logs))
                        successes = [p.success for p in batch]
                        succeeded = await succeed_attempts(conn, successes, self.clock())
                    break
                except ConcurrentModification as lost:
                    # A deadlock or serialization failure (a stale attempt is not an error
                    # here): the whole batch was rolled back, so run it again; if it keeps
                    # losing, leave it unanswered like an outage: the executors re-send.
                    if remaining == 1:
                        raise Unavailable(f"outcomes not recorded: {lost.message}") from lost
        except (JobschedError, asyncio.CancelledError) as exc:
            self.reports.restore_logs(logs)
            for pending in batch:
                self.unwritten(pending.session, pending.success.job_id, exc)
                if not pending.done.done():
                    pending.done.set_exception(
                        exc if isinstance(exc, JobschedError) else Unavailable("stopping")
                    )
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for pending in batch:
            job_id = pending.success.job_id
            self.written(pending.session, job_id, job_id in succeeded)
            if pending.done.done():
                continue
            if job_id in succeeded:
                pending.done.set_result(None)
            else:
                pending.done.set_exception(
                    ConcurrentModification(
                        f"attempt {pending.success.attempt} of job {job_id} is not running"
                    )
                )
